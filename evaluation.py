"""
evaluation.py: how a run is measured. On held-out problems the model answers greedily and the verifier grades
every answer (`evaluate`), and from G samples per problem we estimate pass@k.

The idea: RL is judged on problems no training step can see, greedily (one answer, no luck), and by pass@k, the
chance that at least one of k samples is right. pass@G near pass@1 means the policy has become sure of itself;
pass@G far above pass@1 means the right answer is in the distribution and RL has something to sharpen. With n
samples of which c are right, the unbiased estimate (Chen et al., 2021) is
    pass@k = 1 - C(n - c, k) / C(n, k).
A response counts only if it ended with EOS: a truncated one is never right, whatever it says so far.

Thinking on and off (`--thinking=fusion`, Qwen3's thinking-mode fusion): one model answers /think prompts with a
worked solution and /no_think prompts directly. `mode_sweep` measures both modes, and /think under a thinking
budget of N tokens (`cut_thinking`: sample.py forces `</think><answer>`): accuracy against the think tokens
actually used is the latency/accuracy trade-off the flag and the budget let a user choose. `thinking_modes` runs
that sweep at the end of a --thinking=fusion run, prints it, draws it and returns its summary fields.

Run: used by train.py; `python -m pytest tests/test_train.py -k "evaluate or pass_at_k or thinks"`.
Shapes: B rows.
"""
import math
import time

import torch

from sample import budget_rule, sample
from data.tokenizer import encode, EOS_ID, PAD_ID, THINK, END_THINK, ANSWER
from data.tasks import with_mode
from verify import WS, grade_samples
from tools import calls
from plot import mode_figure

BUDGETS = (0, 2, 4, 8, 16, 32, None)  # think tokens allowed in the budget sweep; None: unlimited


def thinks(text):
    """Does a response show its work (a non-empty think block)? Leading whitespace is allowed, as the verifier
    allows it."""
    text = text.lstrip(WS)
    return text.startswith(THINK) and text.split(END_THINK)[0][len(THINK):].strip() != ""


def think_tokens(text):
    """How many tokens a response spent thinking: the think block's content (all of it, if never closed)."""
    text = text.lstrip(WS)
    return len(encode(text.split(END_THINK)[0][len(THINK):])) if text.startswith(THINK) else 0


def cut_thinking(think_budget):
    """sample()'s force rule for a thinking budget: after <think> and think_budget more tokens, a row that has not
    closed its thought is handed </think><answer>."""
    return budget_rule(think_budget, encode(THINK)[0], encode(END_THINK + ANSWER))


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def evaluate(model, problems, prompt_ids, max_new_tokens, passk_problems=0, group_size=8, temperature=1.0,
             seed=0, force=()):
    """On held-out problems (and their prompts' token ids): greedy accuracy, overall and per family, think share,
    think tokens, response length, the share of answers equal to the truth but not expanded (poly's echo) and
    the share that call the calculator; `force`: sample()'s rules (a thinking budget, the calculator); with
    passk_problems, pass@1 and pass@G from G = group_size samples of the first passk_problems at `temperature`
    (their own generator, from `seed`, so an eval never moves training's)."""
    model.eval()
    correct, think, think_len, lengths, unexpanded, tool = {p.family: [] for p in problems}, [], [], [], [], []
    for i in range(0, len(problems), 256):
        chunk = problems[i:i + 256]
        samples = sample(model, prompt_ids[i:i + 256], 1, max_new_tokens, temperature=0, eos_id=EOS_ID,
                         pad_id=PAD_ID, force=force)
        texts, grades = grade_samples(samples, [p.answer for p in chunk])
        for p, text, g, n in zip(chunk, texts, grades, samples.lengths.tolist()):
            correct[p.family].append(g.correct)
            think.append(thinks(text))
            think_len.append(think_tokens(text))
            lengths.append(n)
            unexpanded.append(g.reason == "not_expanded")
            tool.append(calls(text)[0] > 0)
    out = dict(acc=sum(map(sum, correct.values())) / len(problems),
               **{f"acc_{f}": sum(v) / len(v) for f, v in correct.items()},
               think_share=sum(think) / len(think), think_len=sum(think_len) / len(think_len),
               response_len=sum(lengths) / len(lengths), unexpanded=sum(unexpanded) / len(unexpanded),
               tool_rate=sum(tool) / len(tool))
    if passk_problems:
        G, chunk = group_size, problems[:passk_problems]
        samples = sample(model, prompt_ids[:passk_problems], G, max_new_tokens, temperature=temperature,
                         eos_id=EOS_ID, pad_id=PAD_ID, generator=torch.Generator().manual_seed(seed))
        grades = grade_samples(samples, [p.answer for p in chunk for _ in range(G)])[1]
        c = [sum(g.correct for g in grades[j * G:(j + 1) * G]) for j in range(len(chunk))]  # right of G, per problem
        out.update({f"pass@{k}": sum(pass_at_k(G, ci, k) for ci in c) / len(c) for k in (1, G)})
    return out


def mode_sweep(model, problems, max_new_tokens, budgets=BUDGETS):
    """Thinking-mode fusion, measured greedily on problems (unflagged): /no_think, then /think under each budget
    in budgets (None: unlimited). Returns one dict per setting: mode, budget, acc, think_share, think_len."""
    rows = []
    for mode, n in [("no_think", None)] + [("think", n) for n in budgets]:
        flagged = [with_mode(p, mode) for p in problems]
        ev = evaluate(model, flagged, [encode(p.prompt) for p in flagged], max_new_tokens,
                      force=[cut_thinking(n)] if n is not None else [])
        rows.append(dict(mode=mode, budget=n, acc=ev["acc"], think_share=ev["think_share"], think_len=ev["think_len"]))
    return rows


def show_sweep(before, after):
    """The mode sweep before and after RL as a table: accuracy, think tokens used, and how often the flag was
    broken (a /no_think response that thinks, a /think one that does not)."""
    print("\nthinking modes, greedy on the held-out problems: accuracy / think tokens used / flag broken")
    print(f"  {'mode':10s}{'budget':>8s}{'before RL':>24s}{'after RL':>24s}")
    broke = lambda r: (f"{r['think_share']:.2f}" if r["mode"] == "no_think" else  # a budget cuts the thought
                       f"{1 - r['think_share']:.2f}" if r["budget"] is None else "   -")  # short: no contract there
    for b, a in zip(before, after):
        cells = [f"{r['acc']:.3f} / {r['think_len']:5.1f} / {broke(r)}" for r in (b, a)]
        budget = "-" if b["mode"] == "no_think" else "none" if b["budget"] is None else str(b["budget"])
        print(f"  {'/' + b['mode']:10s}{budget:>8s}{cells[0]:>24s}{cells[1]:>24s}")


def thinking_modes(model, problems, max_new_tokens, before, rl_ran, log, figure=None):
    """The end of a --thinking=fusion run: the mode sweep after RL (the same as before, if RL did not run) next to
    the one before it, printed, logged (stage "modes"), drawn to `figure` (a path; None: no figure). Returns the
    summary's fields: /no_think's accuracy before and after, how often it still thinks, the sweep's seconds."""
    t0 = time.time()
    after = mode_sweep(model, problems, max_new_tokens) if rl_ran else before
    sweep_s = time.time() - t0
    show_sweep(before, after)
    log(dict(stage="modes", before=before, after=after))
    if figure:
        mode_figure(before, after, figure)
    return dict(no_think_acc_before=before[0]["acc"], no_think_acc_after=after[0]["acc"],
                no_think_think_share_after=after[0]["think_share"], sweep_s=round(sweep_s, 1))


def show_eval(name, ev):
    families = [k[4:] for k in ev if k.startswith("acc_")]
    print(f"{name}: greedy acc {ev['acc']:.3f} (" + " ".join(f"{f} {ev['acc_' + f]:.3f}" for f in families) +
          f") | think share {ev['think_share']:.2f} | response length {ev['response_len']:.1f}" +
          (f" | unexpanded {ev['unexpanded']:.2f}" if "acc_poly" in ev else "") +
          (f" | calls the tool {ev['tool_rate']:.2f}" if ev.get("tool_rate") else "") +
          "".join(f" | {k} {v:.3f}" for k, v in ev.items() if k.startswith("pass@")))
