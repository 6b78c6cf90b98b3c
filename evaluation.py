"""
evaluation.py: how a run is measured. The verifier grades every response (`judge`); on held-out problems the
model answers greedily (`evaluate`), and from G samples per problem we estimate pass@k.

The idea: RL is judged on problems no training step can see, greedily (one answer, no luck), and by pass@k, the
chance that at least one of k samples is right. pass@G near pass@1 means the policy has become sure of itself;
pass@G far above pass@1 means the right answer is in the distribution and RL has something to sharpen. With n
samples of which c are right, the unbiased estimate (Chen et al., 2021) is
    pass@k = 1 - C(n - c, k) / C(n, k).
A response counts only if it ended with EOS: a truncated one is never right, whatever it says so far.

Thinking on and off (`--thinking=fusion`, Qwen3's thinking-mode fusion): one model answers /think prompts with a
worked solution and /no_think prompts directly. `mode_sweep` measures both modes, and /think under a thinking
budget of N tokens (sample.py cuts the thought and forces `</think><answer>`): accuracy against the think
tokens actually used is the latency/accuracy trade-off the flag and the budget let a user choose.

Run: used by train.py; `python -m pytest tests/test_train.py -k "judge or evaluate or pass_at_k or thinks"`.
Shapes: B rows.
"""
import math

import torch

from sample import sample
from data.tokenizer import encode, decode, EOS_ID, PAD_ID, THINK, END_THINK, ANSWER
from data.tasks import with_mode
from verify import WS, grade

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


def think_budget(n):
    """sample()'s budget for n think tokens: after <think> and n more, force </think><answer> (None: no budget)."""
    return None if n is None else (n, encode(THINK)[0], encode(END_THINK + ANSWER))


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def judge(samples, answers, check_form=True):
    """A Samples batch's responses decoded (without the EOS the verifier must not see) and graded against
    answers (one per row; check_form: see verify.grade). Returns texts, grades and correct (B,) on the CPU: the
    right answer *and* an EOS."""
    rows = samples.tokens[:, samples.prompt_len:].tolist()
    texts = [decode(row[:n - fin]) for row, n, fin in zip(rows, samples.lengths.tolist(), samples.finished.tolist())]
    grades = [grade(t, a, check_form) for t, a in zip(texts, answers)]
    return texts, grades, torch.tensor([g.correct for g in grades]) & samples.finished.cpu()  # correct: (B,)


def evaluate(model, problems, prompt_ids, max_new_tokens, passk_problems=0, group_size=8, temperature=1.0,
             seed=0, budget=None):
    """On held-out problems (and their prompts' token ids): greedy accuracy, overall and per family, think share,
    think tokens and response length, thinking cut at `budget` tokens if given (None: no cut); with
    passk_problems, pass@1 and pass@G from G = group_size samples of the first passk_problems at `temperature`
    (their own generator, from `seed`, so an eval never moves training's)."""
    model.eval()
    correct, think, think_len, lengths, unexpanded = {p.family: [] for p in problems}, [], [], [], []
    for i in range(0, len(problems), 256):
        chunk = problems[i:i + 256]
        samples = sample(model, prompt_ids[i:i + 256], 1, max_new_tokens, temperature=0, eos_id=EOS_ID,
                         pad_id=PAD_ID, budget=think_budget(budget))
        texts, grades, ok = judge(samples, [p.answer for p in chunk])
        unexpanded += [g.reason == "not_expanded" for g in grades]
        for p, text, c, n in zip(chunk, texts, ok.tolist(), samples.lengths.tolist()):
            correct[p.family].append(c)
            think.append(thinks(text))
            think_len.append(think_tokens(text))
            lengths.append(n)
    out = dict(acc=sum(map(sum, correct.values())) / len(problems),
               **{f"acc_{f}": sum(v) / len(v) for f, v in correct.items()},
               think_share=sum(think) / len(think), think_len=sum(think_len) / len(think_len),
               response_len=sum(lengths) / len(lengths))
    if "acc_poly" in out:  # equal to the truth but not expanded: the echoed question, with check_form off in RL
        out["unexpanded"] = sum(unexpanded) / len(unexpanded)
    if passk_problems:
        G, chunk = group_size, problems[:passk_problems]
        samples = sample(model, prompt_ids[:passk_problems], G, max_new_tokens, temperature=temperature,
                         eos_id=EOS_ID, pad_id=PAD_ID, generator=torch.Generator().manual_seed(seed))
        c = judge(samples, [p.answer for p in chunk for _ in range(G)])[2].view(-1, G).sum(1).tolist()  # right of G
        out.update({f"pass@{k}": sum(pass_at_k(G, ci, k) for ci in c) / len(c) for k in (1, G)})
    return out


def mode_sweep(model, problems, max_new_tokens, budgets=BUDGETS):
    """Thinking-mode fusion, measured greedily on problems (unflagged): /no_think, then /think under each budget
    in budgets (None: unlimited). Returns one dict per setting: mode, budget, acc, think_share, think_len."""
    rows = []
    for mode, n in [("no_think", None)] + [("think", n) for n in budgets]:
        flagged = [with_mode(p, mode) for p in problems]
        ev = evaluate(model, flagged, [encode(p.prompt) for p in flagged], max_new_tokens, budget=n)
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


def show_eval(name, ev):
    families = [k[4:] for k in ev if k.startswith("acc_")]
    print(f"{name}: greedy acc {ev['acc']:.3f} (" + " ".join(f"{f} {ev['acc_' + f]:.3f}" for f in families) +
          f") | think share {ev['think_share']:.2f} | response length {ev['response_len']:.1f}" +
          (f" | unexpanded {ev['unexpanded']:.2f}" if "unexpanded" in ev else "") +
          "".join(f" | {k} {v:.3f}" for k, v in ev.items() if k.startswith("pass@")))
