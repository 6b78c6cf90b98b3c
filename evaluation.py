"""
evaluation.py: how a run is measured. The verifier grades every response (`judge`); on held-out problems the
model answers greedily (`evaluate`), and from G samples per problem we estimate pass@k.

The idea: RL is judged on problems no training step can see, greedily (one answer, no luck), and by pass@k, the
chance that at least one of k samples is right. pass@G near pass@1 means the policy has become sure of itself;
pass@G far above pass@1 means the right answer is in the distribution and RL has something to sharpen. With n
samples of which c are right, the unbiased estimate (Chen et al., 2021) is
    pass@k = 1 - C(n - c, k) / C(n, k).
A response counts only if it ended with EOS: a truncated one is never right, whatever it says so far.

Run: used by train.py; `python -m pytest tests/test_train.py -k "judge or evaluate or pass_at_k or thinks"`.
Shapes: B rows.
"""
import math

import torch

from sample import sample
from data.tokenizer import decode, EOS_ID, PAD_ID, THINK, END_THINK
from verify import grade


def thinks(text):
    """Does a response show its work (a non-empty think block)?"""
    return text.startswith(THINK) and text.split(END_THINK)[0][len(THINK):].strip() != ""


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def judge(samples, answers):
    """A Samples batch's responses decoded (without the EOS the verifier must not see) and graded against
    answers (one per row). Returns texts, grades and correct (B,) on the CPU: the right answer *and* an EOS."""
    rows = samples.tokens[:, samples.prompt_len:].tolist()
    texts = [decode(row[:n - fin]) for row, n, fin in zip(rows, samples.lengths.tolist(), samples.finished.tolist())]
    grades = [grade(t, a) for t, a in zip(texts, answers)]
    return texts, grades, torch.tensor([g.correct for g in grades]) & samples.finished.cpu()  # correct: (B,)


def evaluate(model, problems, prompt_ids, max_new_tokens, passk_problems=0, group_size=8, temperature=1.0,
             seed=0):
    """On held-out problems (and their prompts' token ids): greedy accuracy, overall and per family, think share
    and response length; with passk_problems, pass@1 and pass@G from G = group_size samples of the first
    passk_problems at `temperature` (their own generator, from `seed`, so an eval never moves training's)."""
    model.eval()
    correct, think, lengths = {p.family: [] for p in problems}, [], []
    for i in range(0, len(problems), 256):
        chunk = problems[i:i + 256]
        samples = sample(model, prompt_ids[i:i + 256], 1, max_new_tokens, temperature=0, eos_id=EOS_ID,
                         pad_id=PAD_ID)
        texts, _, ok = judge(samples, [p.answer for p in chunk])
        for p, text, c, n in zip(chunk, texts, ok.tolist(), samples.lengths.tolist()):
            correct[p.family].append(c)
            think.append(thinks(text))
            lengths.append(n)
    out = dict(acc=sum(map(sum, correct.values())) / len(problems),
               **{f"acc_{f}": sum(v) / len(v) for f, v in correct.items()},
               think_share=sum(think) / len(think), response_len=sum(lengths) / len(lengths))
    if passk_problems:
        G, chunk = group_size, problems[:passk_problems]
        samples = sample(model, prompt_ids[:passk_problems], G, max_new_tokens, temperature=temperature,
                         eos_id=EOS_ID, pad_id=PAD_ID, generator=torch.Generator().manual_seed(seed))
        c = judge(samples, [p.answer for p in chunk for _ in range(G)])[2].view(-1, G).sum(1).tolist()  # right of G
        out.update({f"pass@{k}": sum(pass_at_k(G, ci, k) for ci in c) / len(c) for k in (1, G)})
    return out


def show_eval(name, ev):
    families = [k[4:] for k in ev if k.startswith("acc_")]
    print(f"{name}: greedy acc {ev['acc']:.3f} (" + " ".join(f"{f} {ev['acc_' + f]:.3f}" for f in families) +
          f") | think share {ev['think_share']:.2f} | response length {ev['response_len']:.1f}" +
          "".join(f" | {k} {v:.3f}" for k, v in ev.items() if k.startswith("pass@")))
