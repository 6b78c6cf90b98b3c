"""
bench/claims.py: the lectures' claims about RLVR and GRPO, each measured by short runs of train.py, in one command.

The idea: every claim the lectures make (imitation has a ceiling, baselines cut variance, the KL term holds the
policy near its start, ...) becomes a setting of train.py's knobs, a measurement read back from the runs'
metrics.jsonl, and a verdict with its threshold written out. Where a claim does not reproduce at this scale, the
table says so and shows what happened instead: an honest "not reproduced" beats a setting tuned until it does.
This file lives in bench/ because it is not on the reading path: it drives train.py and reads its logs, and
nothing in the reading path imports it.

What it does, one process, one run at a time (never two torch processes at once):
 1. pretrains once per seed and pretraining recipe (`train.py --rl_steps=0`), or takes the checkpoint --ckpt;
 2. runs every claim's RL settings from that checkpoint (`train.py --init_from=<ckpt.pt>`, through train.main in
    this process), each in its own out_dir under --work with its stdout in out_dir/log.txt. A setting shared by
    several claims runs once (the default GRPO run is claim 1's RL run, claim 2's grpo, claim 3's G=8, claim 5's
    beta=0, claim 6's mu=1, claim 8's baseline, claim 10's contrast, claim 11's seeds, claim 12's RL), and an
    out_dir that holds the finished run of the same arguments is reused, so a stopped grid continues where it
    stopped (--fresh redoes everything);
 3. measures what the logs do not hold from the saved models (claim 2: gradient noise at fixed weights; claim 5:
    the KL of each final policy to its start; claim 11: accuracy of thinking vs direct samples at the start);
 4. writes results/claims.md (claim, setting, measured figure per seed, verdict) and results/claimNN.svg, one
    hand-written SVG per claim (like plot.py), every point from the runs.

Run (times are estimates for a 2-core CPU, printed before anything runs; `--plan` prints them and stops):
    python bench/claims.py --quick      # about 10 minutes: one seed, 14 RL steps a run, the same claims
    python bench/claims.py              # about 60 minutes: 60 RL steps a run, 3 seeds where the effect is small
                                        # against seed noise (claims 1-4, 8, 9, 11, 12), 1 seed elsewhere
    python bench/claims.py --only=2,3 --seeds=1337,1 --steps=40 --ckpt=out/ckpt.pt --threads=1 --fresh
The estimate counts pretraining steps (~0.19 s each), default-size RL steps (~0.65 s: 0.25 s sampling, 0.4 s per
pass over the batch) and held-out evaluations (~2 s per 200 problems); the measurements on the models add about
a minute. The budget sets the sizes: the default 700-step pretraining once per seed (shared by --quick and the
full grid), the thinking-free teacher pretrained for 500 steps (--quick: 250), 100 held-out problems instead of
200 under --quick, and pass@k only where a claim reads it. --quick is the full grid with fewer steps: 14 steps
(10 of them Adam's warmup) are too few for most effects, so its verdicts are a smoke test, not the measurement.
The runs' folder gets a .gitignore of `*`: checkpoints and logs stay out of git, results/*.md and *.svg do not.

Expert iteration (claim 12), as small as it can honestly be (`expert_iteration`): each step draws exactly the
batch a GRPO step would (train.rollout: the same prompts, uniforms and verifier), keeps the responses the verifier
calls correct, and takes one supervised cross-entropy step on them (train.pretrain_step), same optimizer, learning
rate and warmup as RL. How it differs from REINFORCE with the 0/1 reward (--advantage=none): both are on-policy,
one gradient step per sampled batch, and both ignore the wrong responses; they differ only in the weights. With
GRPO's default aggregation REINFORCE-none weighs each token of a correct response by 1/(B |o_i|) (every response
counts once, and the step shrinks with the share of correct rows B_correct / B), expert iteration by
1/(tokens kept) (long correct responses count more, and the step does not depend on how many rows were wrong). So
EI vs none isolates the normalisation, and EI vs GRPO the lectures' point: RL's centred advantages also push the
wrong answers down. Not done here: the usual EI collects a dataset and trains several epochs on it, off-policy.

Shapes: P prompts, G group size, B = P·G rows, K kept rows, T time.
"""
import argparse
import contextlib
import dataclasses
import hashlib
import html
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

import checkpoint  # noqa: E402
import config  # noqa: E402
import train  # noqa: E402
import verify  # noqa: E402
from advantage import METHODS, group_advantages  # noqa: E402
from data.tokenizer import EOS_ID, PAD_ID  # noqa: E402
from evaluation import evaluate, judge, show_eval, thinks  # noqa: E402
from grpo import kl_estimate, masked_mean  # noqa: E402
from model import GPT, GPTConfig, positions  # noqa: E402
from sample import sample  # noqa: E402


# -------------------------------------------------------------------------------------------- the claims
@dataclass(frozen=True)
class Setting:
    name: str            # as the table shows it; "{half}" becomes half the RL steps
    argv: tuple = ()     # train.py --key=value on top of the RL defaults; "{half}" as in name, "{passk}": PASSK
    recipe: str = "base"  # which pretraining it starts from (RECIPES)
    kind: str = "rl"     # rl: train.main | ei: expert_iteration


@dataclass(frozen=True)
class Claim:
    id: int
    title: str
    settings: tuple
    seeds: int           # 3 where the effect is small against seed noise, else 1
    analyse: object      # (runs, ctx, measured) -> dict(rows, verdict, panels, notes)
    how: str             # what is measured, in a sentence or two (the details section of claims.md)
    measure: object = None  # (runs, ctx) -> a dict of what the logs do not hold (from the saved models)
    evals: tuple = (2, 1)   # held-out evaluations after the start of each run: (full grid, --quick)


def S(name, *argv, recipe="base", kind="rl"):
    return Setting(name, argv, recipe, kind)


SEEDS = (1337, 1, 2)                  # the README's seeds; --quick takes the first
STEPS = dict(full=60, quick=14)      # RL steps of every run (--steps overrides)
EVAL_ARGS = dict(full=["--passk_problems=0"], quick=["--eval_problems=100", "--passk_problems=0"])  # full: 200
PASSK = dict(full=64, quick=32)      # held-out problems for pass@G, where a claim needs it ("{passk}")
RECIPES = {  # pretraining: train.py --rl_steps=0 plus these (full grid, --quick)
    "base": ([], []),                                                         # 700 steps, the default teacher
    "short": (["--pretrain_steps=150"], ["--pretrain_steps=150"]),            # the format is still unreliable
    "think0": (["--think_prob=0", "--pretrain_steps=500"], ["--think_prob=0", "--pretrain_steps=250"]),  # never thinks
}
DEFAULT = S("GRPO (default)")
NO_CLIP = ("--clip_eps=0.99", "--clip_eps_high=99")  # clip_eps must lie in (0, 1): the ratio is kept in [0.01, 100]
LONG = "--max_new_tokens=112"  # the most a 128-token block allows after the longest 2-digit prompt (15 tokens)
MIX = "--families=add,sub,mul"  # mul was never pretrained: too hard; add and sub soon too easy


def the_claims():
    return [
        Claim(1, "Imitation has a ceiling; RL with a verifier passes it", (DEFAULT,), 3, imitation_ceiling,
              "The teacher's accuracy on its own corpus (the ceiling), held-out greedy accuracy after pretraining and "
              "after RL."),
        Claim(2, "Baselines reduce variance without bias",
              (S("REINFORCE, no baseline (--advantage=none)", "--advantage=none"),
               S("mean baseline (Dr. GRPO, --advantage=drgrpo)", "--advantage=drgrpo"), DEFAULT,
               S("leave-one-out (RLOO, --advantage=rloo)", "--advantage=rloo")), 3, baselines,
              "Held-out accuracy after RL; the spread of the gradient norm across steps (the standard deviation of "
              "its log, which does not depend on how each method scales its advantages); and, at the pretrained "
              "weights of the first seed, the gradient itself: each method's gradient on the same independent "
              "batches, its noise-to-signal ratio tr Var[g] / |E g|^2 per batch, and the cosine of its mean with "
              "RLOO's (RLOO's baseline leaves the gradient exactly unbiased).", measure=measure_gradient_noise),
        Claim(3, "Zero-signal groups: the share of all-equal groups is p^G + (1-p)^G or more",
              (S("G=2, P=64", "--group_size=2", "--prompts_per_step=64"),
               S("G=4, P=32", "--group_size=4", "--prompts_per_step=32"), S("G=8, P=16 (default)"),
               S("G=16, P=8", "--group_size=16", "--prompts_per_step=8")), 3, zero_signal,
              "At 128 completions per step: the logged share of groups whose rewards are all equal (zero_signal) "
              "against p^G + (1-p)^G from the batch's pass rate p (zero_signal_pred), averaged over the steps; "
              "and the learning speed (held-out accuracy after RL, sampled accuracy over the steps)."),
        Claim(4, "Per-sequence normalisation biases length (Dr. GRPO)",
              (S("seq-mean-token-mean (GRPO)", LONG), S("token-mean (DAPO)", LONG, "--loss_agg=token-mean"),
               S("seq-sum-constant (Dr. GRPO)", LONG, "--loss_agg=seq-sum-constant")), 3, length_bias,
              "The length of wrong and of right responses (len_wrong, len_correct) over the steps: the first 5 "
              "steps against the last third. Every setting has max_new_tokens=112 (the default is 80, the teacher's "
              "longest response ~66): room for wrong answers to ramble, as far as the 128-token block allows."),
        Claim(5, "The KL penalty keeps the policy near the reference",
              (S("beta=0 (default)"), S("beta=0.01", "--kl_coef=0.01"), S("beta=0.1", "--kl_coef=0.1")), 1,
              kl_penalty,
              "KL(pi || pi_start) of each final policy, measured the same way for every beta (beta=0 has no reference "
              "in training, so its log says 0): the k3 estimate per token and the summed log-ratio per response, on "
              "G samples of held-out prompts; against held-out accuracy after RL.", measure=measure_kl),
        Claim(6, "Clipping matters once updates reuse samples",
              (S("mu=1, clip 0.2 (default)"), S("mu=1, clip off", *NO_CLIP),
               S("mu=4, clip 0.2", "--updates_per_batch=4"), S("mu=4, clip off", "--updates_per_batch=4", *NO_CLIP)),
              1, clipping,
              "Clip fraction, the largest importance ratio of each step (ratio_max, from the passes after the first), "
              "accuracy and entropy. 'Clip off' is --clip_eps=0.99 --clip_eps_high=99, the widest the config allows "
              "(clip_eps must lie in (0, 1)): the ratio may range over [0.01, 100] before the clip acts."),
        Claim(7, "A format reward helps while the format is unreliable, and must not pay for junk",
              (S("no format bonus", recipe="short"), S("format bonus 0.1", "--format_bonus=0.1", recipe="short")), 1,
              format_reward,
              "From a 150-step pretraining: the format rate (tags and one number, Grade.formatted) and accuracy over "
              "the steps, with and without --format_bonus=0.1. And, with no run, what a bonus for the tags alone would "
              "pay a junk response, against this project's rule (verify.grade)."),
        Claim(8, "Kimi's length reward must wait: applied too early it disrupts learning",
              (S("no length reward"), S("length reward from step 0", "--length_weight=1.0", "--length_start=0"),
               S("length reward from step {half}", "--length_weight=1.0", "--length_start={half}")), 3,
              length_reward,
              "Held-out accuracy after RL, response length and think share at the end, with Kimi k1.5's group length "
              "reward (weight 1: its range of +-0.5 is on the scale of the 0/1 reward) switched on at the start or "
              "half way."),
        Claim(9, "Curriculum and dynamic sampling (Kimi, DAPO) help on a mix of too easy and too hard prompts",
              (S("uniform sampling", MIX), S("curriculum (--curriculum)", MIX, "--curriculum=true"),
               S("dynamic sampling (--dynamic_sampling)", MIX, "--dynamic_sampling=true")), 3, curriculum,
              "On add,sub,mul (mul never pretrained: too hard; add and sub soon too easy): RL steps until held-out "
              "accuracy reaches half of the gain uniform sampling makes by its last step, and the zero-signal share. "
              "Dynamic sampling draws 2P prompts a step and trains on P groups: twice the sampling of the others.",
              evals=(6, 4)),
        Claim(10, "GRPO cannot learn what it never samples",
              (S("default teacher (thinks on half the problems)"),
               S("teacher that never thinks (--think_prob=0)", "--think_prob=0", recipe="think0"),
               S("lin, a family never pretrained (--families=lin)", "--families=lin", "--passk_problems={passk}")), 1,
              never_sampled,
              "From a teacher that never shows its work (its own pretraining): does the think share rise? From the "
              "default checkpoint on linear equations, which it never saw: pass@G at the start, and accuracy after."),
        Claim(11, "Chain of thought emerges without a reward for it", (DEFAULT,), 3, thinking_emerges,
              "The share of sampled responses that think, over the RL steps of each seed; and, at the pretrained "
              "weights, the accuracy of thinking vs direct responses among G samples of held-out prompts (why "
              "thinking wins the group comparisons).", measure=measure_think_vs_direct),
        Claim(12, "Expert iteration (SFT on filtered correct samples) vs RL, which also pushes wrong answers down",
              (DEFAULT, S("REINFORCE with the 0/1 reward (--advantage=none)", "--advantage=none"),
               S("expert iteration", kind="ei")), 3, expert_vs_rl,
              "Held-out accuracy after the same number of sampled batches (P x G each, the same prompts at step 1): "
              "GRPO, REINFORCE without baseline, and expert iteration (module docstring: how it differs)."),
    ]


# -------------------------------------------------------------------------------------------- reading the runs
def steps(run, key):
    """[(rl_step, value)] of a run's RL step records, steps where the value is undefined (null) left out."""
    return [(r["rl_step"], r[key]) for r in run["records"] if r.get("stage") == "rl" and r.get(key) is not None]


def evals(run, key="acc"):
    """[(rl_step, value)] of the held-out evaluations, the starting point (step 0) first."""
    return [(r["rl_step"], r[key]) for r in run["records"] if r.get("stage") == "rl_eval" and r.get(key) is not None]


def summary(run):
    return [r for r in run["records"] if r.get("stage") == "summary"][-1]


def mean(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def start(run, key="acc"):
    return evals(run, key)[0][1]


def final(run, key="acc"):
    return evals(run, key)[-1][1]


def head(run, key, n=5):
    return mean(v for _, v in steps(run, key)[:n])


def tail(run, key, frac=1 / 3):
    pts = steps(run, key)
    return mean(v for _, v in pts[-max(1, round(len(pts) * frac)):])


def spread_log(run, key="grad_norm"):
    """Standard deviation of log(value) over the steps: a spread that ignores the value's scale."""
    logs = [math.log(v) for _, v in steps(run, key) if v > 0]
    m = mean(logs)
    return math.sqrt(mean((x - m) ** 2 for x in logs)) if len(logs) > 1 else float("nan")


def smooth(pts, k=5):
    """Trailing running mean over k points."""
    return [(s, mean(v for _, v in pts[max(0, i - k + 1):i + 1])) for i, (s, _) in enumerate(pts)]


def seed_mean(runs, key, k=5, source=steps):
    """The mean over seeds, step by step, of each run's (smoothed) curve."""
    by_step = {}
    for run in runs:
        for s, v in (smooth(source(run, key), k) if k > 1 else source(run, key)):
            by_step.setdefault(s, []).append(v)
    return sorted((s, mean(vs)) for s, vs in by_step.items())


def per_seed(values, f="{:.3f}"):
    return " / ".join("–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f.format(v)
                      for v in values)


def need(n):
    """Seeds a verdict needs: all of 1 or 2, 2 of 3 (a majority)."""
    return n // 2 + 1


def knob(run, key):
    """A train.py knob of the run, as its command line set it or as config.Config's default."""
    return config.parse_config(run["argv"]).get(key, getattr(config.Config, key))


def series(label, pts, i, dash=False, dots=False):
    return dict(label=label, pts=pts, color=PALETTE[i % len(PALETTE)], dash=dash, dots=dots)


def mean_title(title, runs, smoothed=True):
    n = len(runs)
    parts = ([f"mean of {n} seeds"] if n > 1 else []) + (["5-step running mean"] if smoothed else [])
    return title + (f" ({', '.join(parts)})" if parts else "")


# -------------------------------------------------------------------------------------------- the verdicts
def imitation_ceiling(runs, ctx, measured):
    rs = runs[DEFAULT.name]
    corpus, before, after = [summary(r)["corpus_acc"] for r in rs], [start(r) for r in rs], [final(r) for r in rs]
    n = len(rs)
    passes = sum(a > c + 0.05 for a, c in zip(after, corpus))
    below = sum(b <= c + 0.02 for b, c in zip(before, corpus))
    if passes == n and below == n:
        verdict = (f"reproduced: after RL the held-out accuracy exceeds the teacher's by > 0.05 on {n}/{n} seeds, "
                   f"and pretraining stays at or under the teacher (+0.02) on {n}/{n}")
    elif passes == n:
        verdict = (f"partly reproduced: RL passes the teacher by > 0.05 on {n}/{n} seeds, but pretraining exceeded "
                   f"the teacher by > 0.02 on {n - below}/{n}")
    else:
        verdict = f"not reproduced: after RL > teacher + 0.05 on only {passes}/{n} seeds"
    rows = [("teacher (accuracy of the pretraining corpus)", per_seed(corpus)),
            ("after pretraining (held-out greedy)", per_seed(before)),
            (f"after {ctx.steps} GRPO steps (held-out greedy)", per_seed(after))]
    last = max(s for r in rs for s, _ in evals(r))
    panels = [dict(title="held-out greedy accuracy (dashed: the teacher)",
                   series=[series(f"seed {r['seed']}", evals(r), i) for i, r in enumerate(rs)] +
                   [series(f"teacher, seed {r['seed']}", [(0, c), (last, c)], i, dash=True)
                    for i, (r, c) in enumerate(zip(rs, corpus))]),
              dict(title="sampled accuracy (5-step running mean)",
                   series=[series(f"seed {r['seed']}", smooth(steps(r, "accuracy")), i) for i, r in enumerate(rs)])]
    return dict(rows=rows, verdict=verdict, panels=panels)


def baselines(runs, ctx, measured):
    names = list(runs)
    ref, others = names[0], names[1:]  # ref: no baseline
    n = len(runs[ref])
    acc = {m: [final(r) for r in runs[m]] for m in names}
    spread = {m: [spread_log(r) for r in runs[m]] for m in names}
    noise = {m: measured.get(m) for m in names}
    rows = []
    for m in names:
        at_start = ""
        if noise[m]:
            ns = noise[m]["noise_to_signal"]
            at_start = (f"; at the start (seed {measured['seed']}, {measured['batches']} batches): noise/signal "
                        f"{'unresolved' if ns is None else f'{ns:.1f}'}, cosine to RLOO's mean gradient "
                        f"{noise[m]['cos_rloo']:.2f}")
        rows.append((m, f"held-out acc {per_seed(acc[m])}; sd of log grad-norm over steps "
                        f"{per_seed(spread[m], '{:.2f}')}{at_start}"))
    k = need(n)
    keeps = {m: sum(a >= a0 - 0.02 for a, a0 in zip(acc[m], acc[ref])) for m in others}
    lower_spread = {m: sum(s < s0 for s, s0 in zip(spread[m], spread[ref])) for m in others}
    ns = {m: (noise[m] or {}).get("noise_to_signal") for m in names}
    quieter = [m for m in others if ns[m] is not None and (ns[ref] is None or ns[m] < ns[ref])]
    variance = len(quieter) == len(others)
    accuracy = all(v >= k for v in keeps.values())
    resolved = ("" if any(v is not None for v in ns.values()) else
                " (the mean gradient was not resolved from the noise for any method: no variance to compare)")
    detail = (f"noise/signal at fixed weights below no-baseline's for {len(quieter)}/{len(others)} baselines"
              f"{resolved}; "
              f"accuracy >= no-baseline's - 0.02 on >= {k}/{n} seeds for "
              f"{sum(v >= k for v in keeps.values())}/{len(others)}; (spread of log grad-norm below no-baseline's: "
              + ", ".join(f"{m.split(' (')[0]} {lower_spread[m]}/{n}" for m in others) + ")")
    word = "reproduced" if variance and accuracy else "partly reproduced" if variance or accuracy else "not reproduced"
    panels = [dict(title=mean_title("sampled accuracy", runs[ref]),
                   series=[series(m, seed_mean(runs[m], "accuracy"), i) for i, m in enumerate(names)]),
              dict(title=mean_title("gradient norm (before clipping)", runs[ref]),
                   series=[series(m, seed_mean(runs[m], "grad_norm"), i) for i, m in enumerate(names)])]
    return dict(rows=rows, verdict=f"{word}: {detail}", panels=panels)


def zero_signal(runs, ctx, measured):
    names = list(runs)
    n = len(runs[names[0]])
    share = {m: [mean(v for _, v in steps(r, "zero_signal")) for r in runs[m]] for m in names}
    pred = {m: [mean(v for _, v in steps(r, "zero_signal_pred")) for r in runs[m]] for m in names}
    acc = {m: [final(r) for r in runs[m]] for m in names}
    rows = [(m, f"zero-signal share {per_seed(share[m], '{:.3f}')} vs predicted {per_seed(pred[m], '{:.3f}')}; "
                f"held-out acc {per_seed(acc[m])}") for m in names]
    ms, ps = [mean(share[m]) for m in names], [mean(pred[m]) for m in names]
    above = sum(s >= p - 0.02 for s, p in zip(ms, ps))
    falls = all(a > b for a, b in zip(ms, ms[1:]))
    fastest = max(names, key=lambda m: mean(acc[m]))
    shape = f"the measured share {'falls' if falls else 'does not fall'} with G ({', '.join(f'{s:.2f}' for s in ms)})"
    word = ("reproduced" if falls and above == len(names) else "partly reproduced" if falls or above == len(names)
            else "not reproduced")
    verdict = (f"{word}: {shape}, and is at or above the prediction (-0.02) for {above}/{len(names)} values of G "
               f"(means over {n} seed(s); the prediction is a lower bound when prompts differ in difficulty). "
               f"Learning speed, observed: the best held-out accuracy after RL is {fastest}'s")
    panels = [dict(title=mean_title("zero-signal share (dashed: p^G + (1-p)^G)", runs[names[0]]),
                   series=[series(m, seed_mean(runs[m], "zero_signal"), i) for i, m in enumerate(names)] +
                   [series(f"{m}, predicted", seed_mean(runs[m], "zero_signal_pred"), i, dash=True)
                    for i, m in enumerate(names)]),
              dict(title=mean_title("sampled accuracy", runs[names[0]]),
                   series=[series(m, seed_mean(runs[m], "accuracy"), i) for i, m in enumerate(names)])]
    return dict(rows=rows, verdict=verdict, panels=panels)


def length_bias(runs, ctx, measured):
    names = list(runs)  # seq-mean-token-mean first
    n = len(runs[names[0]])
    grow = {m: [tail(r, "len_wrong") - head(r, "len_wrong") for r in runs[m]] for m in names}
    rows = [(m, "wrong " + per_seed([f"{head(r, 'len_wrong'):.0f}→{tail(r, 'len_wrong'):.0f}" for r in runs[m]], "{}")
             + "; right " + per_seed([f"{head(r, 'len_correct'):.0f}→{tail(r, 'len_correct'):.0f}"
                                      for r in runs[m]], "{}")
             + f"; truncated at the end {per_seed([tail(r, 'truncated') for r in runs[m]], '{:.2f}')}")
            for m in names]
    wins = sum(all(g0 > g + 2 for g in others) for g0, *others in zip(*(grow[m] for m in names)))
    means = ", ".join(f"{m.split(' (')[0]} {mean(grow[m]):+.1f}" for m in names)
    word = "reproduced" if wins >= need(n) else "not reproduced"
    verdict = (f"{word}: wrong responses grew > 2 tokens more under seq-mean-token-mean than under both other "
               f"aggregations on {wins}/{n} seeds (growth of len_wrong, first 5 steps to the last third, seed means: "
               f"{means})")
    panels = [dict(title=mean_title("length of wrong responses", runs[names[0]]),
                   series=[series(m, seed_mean(runs[m], "len_wrong"), i) for i, m in enumerate(names)]),
              dict(title=mean_title("length of right responses", runs[names[0]]),
                   series=[series(m, seed_mean(runs[m], "len_correct"), i) for i, m in enumerate(names)])]
    return dict(rows=rows, verdict=verdict, panels=panels)


def kl_penalty(runs, ctx, measured):
    names = list(runs)
    kl = {m: [x["kl_token"] for x in measured[m]] for m in names}
    seq = {m: [x["kl_response"] for x in measured[m]] for m in names}
    acc = {m: [final(r) for r in runs[m]] for m in names}
    rows = [(m, f"KL to the start {per_seed(kl[m], '{:.4f}')} per token ({per_seed(seq[m], '{:.2f}')} nats per "
                f"response); held-out acc {per_seed(acc[m])}") for m in names]
    n = len(runs[names[0]])
    ordered = sum(all(a > b for a, b in zip(col, col[1:])) for col in zip(*(kl[m] for m in names)))
    word = "reproduced" if ordered >= need(n) else "not reproduced"
    verdict = (f"{word}: the final policy's KL to its start falls as beta rises on {ordered}/{n} seed(s) "
               f"({' > '.join(f'{mean(kl[m]):.4f}' for m in names)} per token); held-out accuracy "
               f"{', '.join(f'{mean(acc[m]):.3f}' for m in names)}")
    panels = [dict(title=mean_title("sampled accuracy", runs[names[0]]),
                   series=[series(m, seed_mean(runs[m], "accuracy"), i) for i, m in enumerate(names)]),
              dict(title="KL in the loss, as logged (beta > 0 only)",
                   series=[series(m, seed_mean(runs[m], "kl"), i) for i, m in enumerate(names)
                           if knob(runs[m][0], "kl_coef") > 0]),
              dict(title="held-out accuracy (y) vs KL to the start (x)", x="KL per token at the end",
                   series=[series(m, list(zip(kl[m], acc[m])), i, dots=True) for i, m in enumerate(names)])]
    return dict(rows=rows, verdict=verdict, panels=panels)


def clipping(runs, ctx, measured):
    names = list(runs)  # mu1 clip, mu1 off, mu4 clip, mu4 off
    clip_frac = {m: [mean(v for _, v in steps(r, "clip_frac")) for r in runs[m]] for m in names}
    ratio = {m: [max((v for _, v in steps(r, "ratio_max")), default=float("nan")) for r in runs[m]] for m in names}
    acc = {m: [final(r) for r in runs[m]] for m in names}
    ent = {m: [tail(r, "entropy") for r in runs[m]] for m in names}
    rows = [(m, f"clip fraction {per_seed(clip_frac[m], '{:.4f}')}; largest ratio {per_seed(ratio[m], '{:.2f}')}; "
                f"held-out acc {per_seed(acc[m])}; entropy at the end {per_seed(ent[m], '{:.3f}')}") for m in names]
    on, off = names[2], names[3]
    wider = mean(ratio[off]) > mean(ratio[on])
    worse = mean(acc[off]) < mean(acc[on]) - 0.03 or mean(ent[off]) < 0.5 * mean(ent[on])
    same_mu1 = abs(mean(acc[names[0]]) - mean(acc[names[1]])) <= 0.01
    control = (f"at mu=1 the clip {'changed nothing' if same_mu1 else 'changed the accuracy'} "
               f"({mean(acc[names[0]]):.3f} vs {mean(acc[names[1]]):.3f}: on-policy the ratio is 1)")
    if wider and worse:
        verdict = (f"reproduced: at mu=4, without the clip the ratio reached {mean(ratio[off]):.2f} (with it "
                   f"{mean(ratio[on]):.2f}) and accuracy or entropy suffered (acc {mean(acc[off]):.3f} vs "
                   f"{mean(acc[on]):.3f}, entropy {mean(ent[off]):.3f} vs {mean(ent[on]):.3f}; thresholds: acc "
                   f"lower by > 0.03 or entropy below half); {control}")
    elif wider:
        verdict = (f"partly reproduced: at mu=4 the ratio went further without the clip ({mean(ratio[off]):.2f} vs "
                   f"{mean(ratio[on]):.2f}), but accuracy and entropy did not suffer (acc {mean(acc[off]):.3f} vs "
                   f"{mean(acc[on]):.3f}, entropy {mean(ent[off]):.3f} vs {mean(ent[on]):.3f}; thresholds: acc lower "
                   f"by > 0.03 or entropy below half); {control}")
    else:
        verdict = (f"not reproduced: at mu=4 the ratio did not go further without the clip ({mean(ratio[off]):.2f} "
                   f"vs {mean(ratio[on]):.2f}); {control}")
    panels = [dict(title="sampled accuracy (5-step running mean)",
                   series=[series(m, seed_mean(runs[m], "accuracy"), i) for i, m in enumerate(names)]),
              dict(title="largest importance ratio per step",
                   series=[series(m, seed_mean(runs[m], "ratio_max", k=1), i) for i, m in enumerate(names)]),
              dict(title="entropy per token (5-step running mean)",
                   series=[series(m, seed_mean(runs[m], "entropy"), i) for i, m in enumerate(names)])]
    return dict(rows=rows, verdict=verdict, panels=panels)


JUNK = [  # (response, truth): what a policy farming a format bonus might write
    ("<think></think><answer>banana</answer>", "12"),
    ("<think>12</think><answer>12 or 13</answer>", "12"),
    ("<think></think><answer>5+7</answer>", "12"),
    ("<think></think><answer></answer>", "12"),
    ("<think>7+5=12</think><answer>1 2</answer>", "12"),
    ("Sure! <think></think><answer>12</answer>", "12"),
    ("<think></think><answer>13</answer>", "12"),  # a wrong number: formatted under both rules, and rightly so
]
TAGS_ALONE = re.compile(r"\s*<think>.*</think>\s*<answer>.*</answer>\s*", re.S)  # an R1-style "format" check


def junk_table():
    lines = ["| response | a bonus for the tags alone pays | this project: Grade.formatted (reason) |",
             "| --- | --- | --- |"]
    for text, truth in JUNK:
        g = verify.grade(text, truth)
        lines.append(f"| `{text}` | {'yes' if TAGS_ALONE.search(text) else 'no'} | {g.formatted} ({g.reason}) |")
    return lines


def format_reward(runs, ctx, measured):
    names = list(runs)  # without, with
    first = {m: [steps(r, "format_rate")[0][1] for r in runs[m]] for m in names}
    avg = {m: [mean(v for _, v in steps(r, "format_rate")) for r in runs[m]] for m in names}
    acc = {m: [final(r) for r in runs[m]] for m in names}
    rows = [(m, f"format rate at step 1 {per_seed(first[m], '{:.2f}')}, mean over the steps "
                f"{per_seed(avg[m], '{:.3f}')}; held-out acc {per_seed(acc[m])}") for m in names]
    off, on = names
    junk_paid = sum(bool(TAGS_ALONE.search(t)) and not verify.grade(t, a).formatted for t, a in JUNK)
    rule = (f"of {len(JUNK)} junk responses, {junk_paid} would earn a tags-alone bonus that this project's rule "
            "refuses")
    if mean(first[off]) >= 0.95:
        verdict = (f"not measured: the short pretraining already formats {mean(first[off]):.2f} of its samples, so "
                   f"there is nothing for the bonus to fix; {rule}")
    else:
        gain = mean(avg[on]) - mean(avg[off])
        word = "reproduced" if gain >= 0.02 else "not reproduced"
        verdict = (f"{word}: the bonus raised the mean format rate over the steps by {gain:+.3f} (threshold +0.02), "
                   f"held-out accuracy {mean(acc[off]):.3f} without, {mean(acc[on]):.3f} with; {rule}")
    panels = [dict(title="format rate (5-step running mean)",
                   series=[series(m, seed_mean(runs[m], "format_rate"), i) for i, m in enumerate(names)]),
              dict(title="sampled accuracy (5-step running mean)",
                   series=[series(m, seed_mean(runs[m], "accuracy"), i) for i, m in enumerate(names)])]
    notes = ["What a format bonus would pay (verify.grade on hand-written junk, truth 12):", ""] + junk_table()
    return dict(rows=rows, verdict=verdict, panels=panels, notes=notes)


def length_reward(runs, ctx, measured):
    names = list(runs)  # none, from 0, from half
    n = len(runs[names[0]])
    acc = {m: [final(r) for r in runs[m]] for m in names}
    length = {m: [tail(r, "response_len") for r in runs[m]] for m in names}
    think = {m: [tail(r, "think_share") for r in runs[m]] for m in names}
    rows = [(m, f"held-out acc {per_seed(acc[m])}; length at the end {per_seed(length[m], '{:.1f}')}; think share "
                f"{per_seed(think[m], '{:.2f}')}") for m in names]
    early, late = names[1], names[2]
    hurt = sum(a < b - 0.03 for a, b in zip(acc[early], acc[late]))
    word = "reproduced" if hurt >= need(n) else "not reproduced"
    verdict = (f"{word}: with the length reward from step 0 the held-out accuracy ended > 0.03 below the late start's "
               f"on {hurt}/{n} seeds (means: none {mean(acc[names[0]]):.3f}, from 0 {mean(acc[early]):.3f}, late "
               f"{mean(acc[late]):.3f}; think share at the end {mean(think[early]):.2f} vs {mean(think[late]):.2f})")
    panels = [dict(title=mean_title("sampled accuracy", runs[names[0]]),
                   series=[series(m, seed_mean(runs[m], "accuracy"), i) for i, m in enumerate(names)]),
              dict(title=mean_title("response length", runs[names[0]]),
                   series=[series(m, seed_mean(runs[m], "response_len"), i) for i, m in enumerate(names)]),
              dict(title=mean_title("think share", runs[names[0]]),
                   series=[series(m, seed_mean(runs[m], "think_share"), i) for i, m in enumerate(names)])]
    return dict(rows=rows, verdict=verdict, panels=panels)


def steps_to(run, target):
    return next((s for s, v in evals(run) if v >= target), None)


def curriculum(runs, ctx, measured):
    names = list(runs)  # uniform, curriculum, dynamic
    uni = runs[names[0]]
    n = len(uni)
    targets = [start(r) + 0.5 * (final(r) - start(r)) for r in uni]
    gains = [final(r) - start(r) for r in uni]
    reach = {m: [steps_to(r, t) for r, t in zip(runs[m], targets)] for m in names}
    zs = {m: [mean(v for _, v in steps(r, "zero_signal")) for r in runs[m]] for m in names}
    drawn = {m: [mean(v for _, v in steps(r, "zero_signal_drawn")) for r in runs[m]] for m in names}
    acc = {m: [final(r) for r in runs[m]] for m in names}
    rows = [(m, f"steps to target {per_seed([x if x is not None else 'never' for x in reach[m]], '{}')}; "
                f"zero-signal share trained {per_seed(zs[m], '{:.2f}')} (drawn {per_seed(drawn[m], '{:.2f}')}); "
                f"held-out acc {per_seed(acc[m])}") for m in names]
    target_note = ("target per seed: the start + half of uniform sampling's gain by its last step ("
                   + per_seed(targets) + f"), resolution {knob(uni[0], 'rl_eval_interval')} steps")
    if mean(gains) < 0.02:
        return dict(rows=rows, verdict=f"not measured: uniform sampling gained {mean(gains):+.3f} (< 0.02), no "
                                       f"speed to compare; {target_note}", panels=curriculum_panels(runs, names))
    inf = float("inf")
    faster = {m: sum((a if a is not None else inf) < (b if b is not None else inf)
                     for a, b in zip(reach[m], reach[names[0]])) for m in names[1:]}
    ok = [m for m in names[1:] if faster[m] >= need(n)]
    word = "reproduced" if len(ok) == 2 else "partly reproduced" if ok else "not reproduced"
    verdict = (f"{word}: reached the target in fewer steps than uniform sampling on "
               + ", ".join(f"{faster[m]}/{n} seeds ({m.split(' (')[0]})" for m in names[1:])
               + f" (needed: {need(n)}); {target_note}")
    return dict(rows=rows, verdict=verdict, panels=curriculum_panels(runs, names))


def curriculum_panels(runs, names):
    return [dict(title=mean_title("held-out greedy accuracy", runs[names[0]], smoothed=False),
                 series=[series(m, seed_mean(runs[m], "acc", k=1, source=evals), i) for i, m in enumerate(names)]),
            dict(title=mean_title("zero-signal share of the trained groups", runs[names[0]]),
                 series=[series(m, seed_mean(runs[m], "zero_signal"), i) for i, m in enumerate(names)])]


def never_sampled(runs, ctx, measured):
    default, think0, lin = list(runs)
    d, t, f = runs[default][0], runs[think0][0], runs[lin][0]
    G = knob(f, "group_size")
    pass_g = evals(f, f"pass@{G}")[0][1]
    rows = [(default, f"think share {head(d, 'think_share'):.2f} → {tail(d, 'think_share'):.2f}"),
            (think0, f"think share {head(t, 'think_share'):.2f} → {tail(t, 'think_share'):.2f}; held-out acc "
                     f"{start(t):.3f} → {final(t):.3f}"),
            (lin, f"pass@{G} at the start {pass_g:.3f}; held-out acc {start(f):.3f} → {final(f):.3f}")]
    a = tail(t, "think_share") < 0.05
    b = pass_g < 0.05 and final(f) - start(f) < 0.05
    part_a = (f"the never-thinking teacher's model {'did not start' if a else 'started'} to think (think share "
              f"{tail(t, 'think_share'):.2f} at the end; threshold 0.05; the default teacher's "
              f"{tail(d, 'think_share'):.2f})")
    part_b = (f"on lin, pass@{G} at the start was {pass_g:.3f} (threshold 0.05) and accuracy moved "
              f"{final(f) - start(f):+.3f} (threshold +0.05)")
    word = "reproduced" if a and b else "partly reproduced" if a or b else "not reproduced"
    panels = [dict(title="share of sampled responses that think",
                   series=[series(default, steps(d, "think_share"), 0), series(think0, steps(t, "think_share"), 1)]),
              dict(title="held-out greedy accuracy",
                   series=[series(m, evals(runs[m][0]), i) for i, m in enumerate(runs)])]
    return dict(rows=rows, verdict=f"{word}: {part_a}; {part_b}", panels=panels)


def thinking_emerges(runs, ctx, measured):
    rs = runs[DEFAULT.name]
    n = len(rs)
    split = measured["per_seed"]
    first = [steps(r, "think_share")[0][1] for r in rs]
    last = [tail(r, "think_share") for r in rs]
    rows = [("think share of sampled responses, step 1 → last third", per_seed([f"{a:.2f}→{b:.2f}" for a, b in
                                                                               zip(first, last)], "{}")),
            ("at the start: accuracy of thinking vs direct samples",
             per_seed([f"{s['acc_think']:.2f} vs {s['acc_direct']:.2f}" for s in split], "{}")),
            ("at the start: share of samples that think", per_seed([s["think_share"] for s in split], "{:.2f}"))]
    emerges = sum(a < 0.5 and b > 0.9 for a, b in zip(first, last))
    why = sum(s["acc_think"] > s["acc_direct"] for s in split)
    word = ("reproduced" if emerges == n and why == n else "partly reproduced" if emerges or why
            else "not reproduced")
    verdict = (f"{word}: the think share rose from < 0.5 to > 0.9 on {emerges}/{n} seeds, and at the start thinking "
               f"samples were right more often than direct ones on {why}/{n}")
    panels = [dict(title="share of sampled responses that think",
                   series=[series(f"seed {r['seed']}", steps(r, "think_share"), i) for i, r in enumerate(rs)]),
              dict(title="at the start: accuracy of thinking (dots) and direct (squares) samples", x="seed (in order)",
                   series=[series("thinking", [(i + 1, s["acc_think"]) for i, s in enumerate(split)], 0, dots=True),
                           series("direct", [(i + 1, s["acc_direct"]) for i, s in enumerate(split)], 1, dots=True)])]
    return dict(rows=rows, verdict=verdict, panels=panels)


def expert_vs_rl(runs, ctx, measured):
    grpo, none, ei = list(runs)
    n = len(runs[grpo])
    acc = {m: [final(r) for r in runs[m]] for m in runs}
    rows = [(m, f"held-out acc {per_seed([start(r) for r in runs[m]])} → {per_seed(acc[m])}; think share at the end "
                f"{per_seed([tail(r, 'think_share') for r in runs[m]], '{:.2f}')}") for m in runs]
    better = sum(a > b + 0.02 for a, b in zip(acc[grpo], acc[ei]))
    word = "reproduced" if better >= need(n) else "not reproduced"
    verdict = (f"{word}: GRPO ended > 0.02 above expert iteration on {better}/{n} seeds (means: GRPO "
               f"{mean(acc[grpo]):.3f}, REINFORCE-none {mean(acc[none]):.3f}, expert iteration {mean(acc[ei]):.3f}; "
               "none vs expert iteration differ only in how the kept tokens are weighted)")
    panels = [dict(title=mean_title("held-out greedy accuracy", runs[grpo], smoothed=False),
                   series=[series(m, seed_mean(runs[m], "acc", k=1, source=evals), i) for i, m in enumerate(runs)]),
              dict(title=mean_title("sampled accuracy", runs[grpo]),
                   series=[series(m, seed_mean(runs[m], "accuracy"), i) for i, m in enumerate(runs)])]
    return dict(rows=rows, verdict=verdict, panels=panels)


# -------------------------------------------------------------------------------------------- measurements on models
MEASURE = dict(full=dict(batches=16, prompts=64), quick=dict(batches=6, prompts=32))  # sizes of the measurements


def start_model_and_task(argv):
    """What a run of argv (with --init_from=<ckpt>) starts from: its config, device, the loaded model, and the
    held-out problems and RL pool exactly as train.py builds them (config.make_task)."""
    cfg, device, _, ckpt, _ = config.configure(list(argv))
    eval_set, eval_ids, pool, pool_ids = config.make_task(cfg, ckpt["model_config"]["block_size"], pretrains=False)
    return cfg, device, load_model(ckpt, device), eval_set, eval_ids, pool, pool_ids


def load_model(ckpt, device):
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


@torch.no_grad()
def kl_to_start(argv, final_ckpt, n_prompts):
    """KL(pi || pi_start) of the final policy in final_ckpt, on G samples from it of n_prompts held-out prompts:
    the k3 estimate per token (what train.py logs as kl) and the summed log-ratio per response (its KL in nats)."""
    cfg, device, ref, eval_set, eval_ids, _, _ = start_model_and_task(argv)
    policy = load_model(checkpoint.load_checkpoint(final_ckpt), device)
    s = sample(policy, eval_ids[:n_prompts], cfg.group_size, cfg.max_new_tokens, temperature=cfg.temperature,
               eos_id=EOS_ID, pad_id=PAD_ID, generator=torch.Generator().manual_seed(0))
    x, targets = s.tokens[:, :-1], s.tokens[:, 1:]  # (B, T) each
    pos, key_mask, mask = positions(s.valid)[:, :-1], s.valid[:, :-1], s.mask[:, 1:]  # (B, T) each
    logprobs = train.policy_logprobs(policy, x, pos, key_mask, targets, cfg.temperature)  # (B, T)
    ref_logprobs = train.policy_logprobs(ref, x, pos, key_mask, targets, cfg.temperature)  # (B, T)
    return dict(kl_token=float(masked_mean(kl_estimate(logprobs, ref_logprobs, "k3"), mask)),
                kl_response=float(((logprobs - ref_logprobs) * mask).sum(1).mean()))


@torch.no_grad()
def think_vs_direct(argv, n_prompts):
    """At the starting weights: G samples (RL's temperature) of n_prompts held-out prompts, and the accuracy of the
    ones that think and of the ones that answer directly."""
    cfg, _, model, eval_set, eval_ids, _, _ = start_model_and_task(argv)
    G = cfg.group_size
    s = sample(model, eval_ids[:n_prompts], G, cfg.max_new_tokens, temperature=cfg.temperature, eos_id=EOS_ID,
               pad_id=PAD_ID, generator=torch.Generator().manual_seed(0))
    texts, _, correct = judge(s, [p.answer for p in eval_set[:n_prompts] for _ in range(G)])
    think = [thinks(t) for t in texts]
    pick = lambda want: [c for c, t in zip(correct.tolist(), think) if t == want]
    return dict(acc_think=mean(pick(True)), acc_direct=mean(pick(False)), think_share=mean(think))


def gradient_noise(argv, batches):
    """At the starting weights: the policy gradient of every advantage method on the same `batches` independent
    sampled batches (train.rollout, then train.grpo_update with a step of size 0, so that only .grad is filled).
    Per method: the noise-to-signal ratio tr Var[g] / |E g|^2 of one batch's gradient (|E g|^2 estimated without
    its finite-sample bias; None when the signal is not resolved) and the cosine of its mean with RLOO's."""
    cfg, device, model, _, _, pool, pool_ids = start_model_and_task(argv)
    cfg = dataclasses.replace(cfg, grad_clip=0.0, updates_per_batch=1)  # the raw gradient, one pass
    run = checkpoint.new_run(cfg.seed, len(pool))
    still = torch.optim.SGD(model.parameters(), lr=0.0)  # its step moves nothing
    off = torch.autocast(device.type, enabled=False)
    total, squares, used = {m: 0.0 for m in METHODS}, {m: 0.0 for m in METHODS}, 0
    for _ in range(batches):
        batch = train.rollout(model, pool, pool_ids, run, cfg)
        grads = {}
        for m in METHODS:
            advantages = group_advantages(batch["rewards"], cfg.group_size, method=m)  # (B,)
            if train.grpo_update(model, still, batch["samples"], advantages, cfg, off) is None:
                break
            grads[m] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        if len(grads) < len(METHODS):  # a non-finite gradient: leave this batch out
            continue
        used += 1
        for m, g in grads.items():
            total[m], squares[m] = total[m] + g, squares[m] + float(g @ g)
    out = dict(batches=used)
    if used < 2:
        return dict(out, **{m: dict(noise_to_signal=None, cos_rloo=float("nan")) for m in METHODS})
    for m in METHODS:
        g_mean = total[m] / used  # (params,)
        var = (squares[m] - used * float(g_mean @ g_mean)) / (used - 1)  # tr Var[g] of one batch
        signal = float(g_mean @ g_mean) - var / used  # |E g|^2, unbiased
        cos = float(g_mean @ (total["rloo"] / used)) / (float(g_mean.norm() * (total["rloo"] / used).norm()) or 1.0)
        out[m] = dict(noise_to_signal=var / signal if signal > 0 else None, cos_rloo=cos)
    return out


def measure_gradient_noise(runs, ctx):
    first = next(iter(runs.values()))[0]
    out = gradient_noise(first["argv"], MEASURE[ctx.size]["batches"])
    by_name = {name: out[knob(rs[0], "advantage")] for name, rs in runs.items()}
    return dict(by_name, seed=first["seed"], batches=out["batches"])


def measure_kl(runs, ctx):
    return {name: [kl_to_start(r["argv"], os.path.join(r["out_dir"], "ckpt.pt"), MEASURE[ctx.size]["prompts"])
                   for r in rs] for name, rs in runs.items()}


def measure_think_vs_direct(runs, ctx):
    return dict(per_seed=[think_vs_direct(r["argv"], MEASURE[ctx.size]["prompts"]) for r in runs[DEFAULT.name]])


# -------------------------------------------------------------------------------------------- expert iteration
def own_samples(batch, pool_ids, rows, group_size):
    """Rows of a sampled batch as supervised pairs x, y (K, T), like train.pretrain_batch's: the prompt, then the
    sampled response with its EOS; the cross-entropy is on the response only (y = -1 elsewhere)."""
    s = batch["samples"]
    seqs = []
    for r in rows:
        prompt = pool_ids[batch["prompt_idx"][r // group_size]]
        seqs.append((prompt + s.tokens[r, s.prompt_len:s.prompt_len + int(s.lengths[r])].tolist(), len(prompt)))
    return train.supervised_pairs(seqs)


def expert_iteration(argv):
    """Expert iteration with train.py's knobs (the module docstring says how it differs from REINFORCE): per step,
    GRPO's batch (train.rollout), its verifier-correct responses kept, one cross-entropy step on them. Writes
    metrics.jsonl like train.py: rl (train.rl_record, plus kept), rl_eval, summary."""
    t_start = time.time()
    cfg, device, model, eval_set, eval_ids, pool, pool_ids = start_model_and_task(argv)
    torch.manual_seed(cfg.seed)
    _, metrics_path = checkpoint.claim_out_dir(cfg.out_dir, False, cfg.overwrite)
    metrics = open(metrics_path, "a")
    log = lambda record: checkpoint.write_record(metrics, record)
    run = checkpoint.new_run(cfg.seed, len(pool))  # the generators GRPO's run starts with: the same first batch
    optimizer = train.make_optimizer(model, cfg.rl_lr, weight_decay=0.0)
    off = torch.autocast(device.type, enabled=False)
    before = evaluate(model, eval_set, eval_ids, *train.eval_args(cfg, cfg.passk_problems))
    show_eval("before expert iteration", before)
    log(dict(stage="rl_eval", rl_step=0, **before))
    ev, nan = before, float("nan")
    for step in range(1, cfg.rl_steps + 1):
        if checkpoint.STOP:
            sys.exit(f"stopped by {checkpoint.STOP[0]} at expert iteration step {step}")
        t0 = time.time()
        batch = train.rollout(model, pool, pool_ids, run, cfg)
        t1 = time.time()
        keep = batch["correct"].nonzero().flatten().tolist()
        loss = nan
        if keep:  # no correct response, no step
            x, y = own_samples(batch, pool_ids, keep, cfg.group_size)
            lr = cfg.rl_lr * min(1.0, step / 10)  # train.py's RL warmup
            loss = float(train.pretrain_step(model, optimizer, x.to(device), y.to(device), lr, cfg.grad_clip, off))
        run["rl_step"] = step
        rec = train.rl_record(step, batch, dict(loss=loss, kl=0.0, entropy=nan, clip_frac=0.0, lp_diff=nan,
                                                ratio_max=nan, grad_norm=nan), t1 - t0, time.time() - t1)
        log(dict(rec, kept=len(keep)))
        print(f"ei {step:4d} | acc {rec['accuracy']:.3f} | kept {len(keep)} | loss {loss:.4f} | len "
              f"{rec['response_len']:.1f} | think {rec['think_share']:.2f} | {rec['sample_s']:.1f}s + "
              f"{rec['train_s']:.1f}s")
        if step % cfg.rl_eval_interval == 0 or step == cfg.rl_steps:
            ev = evaluate(model, eval_set, eval_ids, *train.eval_args(cfg, cfg.passk_problems))
            show_eval(f"eval @ expert iteration step {step}", ev)
            log(dict(stage="rl_eval", rl_step=step, **ev))
    summary = dict(kind="expert_iteration", pretrain_acc=before["acc"], rl_acc=ev["acc"],
                   think_share_before=before["think_share"], think_share_after=ev["think_share"],
                   wall_s=round(time.time() - t_start, 1), seed=cfg.seed)
    log(dict(stage="summary", **summary))
    print(json.dumps(summary))
    metrics.close()


# -------------------------------------------------------------------------------------------- the grid
@dataclass
class Job:
    kind: str       # pretrain | rl | ei
    argv: list      # without --out_dir and --overwrite
    out_dir: str
    seed: int
    label: str
    needs: str = None  # the pretraining job's out_dir, or None

    @property
    def key(self):
        return self.kind, tuple(self.argv)


def digest(argv):
    return hashlib.sha1(json.dumps(argv).encode()).hexdigest()[:8]


def slug(argv):
    s = "-".join(a.removeprefix("--") for a in argv) or "default"
    return re.sub(r"[^A-Za-z0-9=.,_-]", "_", s)[:60]


def plan(claims, ctx):
    """The jobs in the order they run (pretraining first), each once, and per claim and setting its jobs by seed."""
    jobs, by_claim = {}, {}
    pre_extra = ["--preset=cpu", "--rl_steps=0"] + ctx.threads
    for claim in claims:
        by_claim[claim.id] = {}
        evals = claim.evals[ctx.size == "quick"]
        for st in claim.settings:
            fill = lambda s: s.format(half=ctx.steps // 2, passk=PASSK[ctx.size])
            name = fill(st.name)
            by_claim[claim.id][name] = []
            for seed in ctx.seeds[:claim.seeds]:
                if st.recipe == "base" and ctx.ckpt:
                    ckpt, needs = os.path.abspath(ctx.ckpt), None
                else:
                    argv = pre_extra + RECIPES[st.recipe][ctx.size == "quick"] + [f"--seed={seed}"] + ctx.extra
                    needs = os.path.join(ctx.work, f"pretrain-{st.recipe}-s{seed}-{digest(argv)}")
                    jobs.setdefault(("pretrain", tuple(argv)), Job("pretrain", argv, needs, seed,
                                                                   f"pretrain {st.recipe}, seed {seed}"))
                    ckpt = os.path.join(needs, "ckpt.pt")
                argv = (["--preset=cpu", f"--init_from={ckpt}", f"--seed={seed}", f"--rl_steps={ctx.steps}",
                         f"--rl_eval_interval={max(1, ctx.steps // evals)}"] + EVAL_ARGS[ctx.size] + ctx.threads +
                        ctx.extra + [fill(a) for a in st.argv])
                out_dir = os.path.join(ctx.work, f"{st.kind}-{st.recipe}-s{seed}-{slug([fill(a) for a in st.argv])}-"
                                                 f"{digest(argv)}")
                job = jobs.setdefault((st.kind, tuple(argv)), Job(st.kind, argv, out_dir, seed,
                                                                  f"claim {claim.id}, {name}, seed {seed}", needs))
                by_claim[claim.id][name].append(job)
    order = sorted(jobs.values(), key=lambda j: j.kind != "pretrain")  # stable: pretraining first, then claim order
    return order, by_claim


def estimate_s(job):
    """Seconds on a 2-core CPU, from the README's timings: a pretraining step ~0.19 s; an RL step ~0.25 s of sampling
    (twice with dynamic sampling) + ~0.4 s per pass over the batch (+25% with a KL reference); an evaluation ~0.01 s
    a held-out problem + ~0.002 s a pass@k sample."""
    o = config.parse_config(job.argv)
    get = lambda k: o.get(k, getattr(config.Config, k))
    eval_s = 0.3 + 0.01 * get("eval_problems") + 0.002 * get("passk_problems") * get("group_size")
    if job.kind == "pretrain":
        return 2 + 0.19 * get("pretrain_steps") + eval_s * (get("pretrain_steps") // get("eval_interval") + 1)
    step = 0.25 * (1 + get("dynamic_sampling")) + (0.15 if job.kind == "ei" else
                                                   0.4 * get("updates_per_batch") * (1.25 if get("kl_coef") else 1))
    step *= 1.1 if get("max_new_tokens") > 80 else 1.0
    return 2 + get("rl_steps") * step + (1 + math.ceil(get("rl_steps") / get("rl_eval_interval"))) * eval_s


def finished(job):
    """The out_dir holds the finished run of exactly this job's arguments."""
    try:
        with open(os.path.join(job.out_dir, "argv.json")) as f:
            if json.load(f)["argv"] != job.argv:
                return False
        with open(os.path.join(job.out_dir, "metrics.jsonl")) as f:
            return any(json.loads(line).get("stage") == "summary" for line in f)
    except (OSError, ValueError, KeyError):
        return False


def run_job(job, ctx):
    """One job, in this process, its stdout into out_dir/log.txt, unless its out_dir already holds it. Returns the
    run: argv, out_dir, seed, records (metrics.jsonl), error (None, or why it failed), wall_s, reused."""
    out = dict(argv=job.argv + [f"--out_dir={job.out_dir}", "--overwrite=true"], out_dir=job.out_dir, seed=job.seed,
               records=[], error=None, wall_s=0.0, reused=False)
    log_path = os.path.join(job.out_dir, "log.txt")
    if job.needs and not finished(SimpleNamespace(out_dir=job.needs, argv=ctx.done_argv.get(job.needs))):
        out["error"] = f"its pretraining ({job.needs}) did not finish"
    elif not ctx.fresh and finished(job):
        out["reused"] = True
        with open(os.path.join(job.out_dir, "argv.json")) as f:
            out["wall_s"] = json.load(f)["wall_s"]
    else:
        os.makedirs(job.out_dir, exist_ok=True)
        if os.path.exists(os.path.join(job.out_dir, "argv.json")):
            os.remove(os.path.join(job.out_dir, "argv.json"))
        if checkpoint.STOP:
            sys.exit(f"stopped by {checkpoint.STOP[0]}: rerun the same command to continue (finished runs are reused)")
        t0, handlers = time.time(), [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
        with open(log_path, "w") as log, contextlib.redirect_stdout(log):
            try:
                (expert_iteration if job.kind == "ei" else train.main)(out["argv"])
            except SystemExit as e:
                if e.code not in (None, 0):
                    out["error"] = str(e.code)
            except Exception as e:  # a bug shows in the log with its traceback; the grid goes on
                traceback.print_exc(file=log)
                out["error"] = f"{type(e).__name__}: {e}"
            finally:  # train.main's stop-at-the-end-of-the-step handlers; between runs Ctrl-C stops at once
                signal.signal(signal.SIGINT, handlers[0])
                signal.signal(signal.SIGTERM, handlers[1])
        out["wall_s"] = time.time() - t0
        if checkpoint.STOP:
            sys.exit(f"stopped by {checkpoint.STOP[0]}: rerun the same command to continue (finished runs are reused)")
        if out["error"] is None:
            with open(os.path.join(job.out_dir, "argv.json"), "w") as f:
                json.dump(dict(argv=job.argv, wall_s=round(out["wall_s"], 1)), f)
    if out["error"] is None:
        with open(os.path.join(job.out_dir, "metrics.jsonl")) as f:
            out["records"] = [json.loads(line) for line in f]
        ctx.done_argv[job.out_dir] = job.argv
    return out


def measured_for(claim, runs, ctx):
    """claim.measure on its runs, cached in the work folder next to them."""
    if claim.measure is None:
        return {}
    path = os.path.join(ctx.work, "measures", f"claim{claim.id:02d}-{ctx.size}-"
                        f"{digest([r['out_dir'] for rs in runs.values() for r in rs])}.json")
    if not ctx.fresh and os.path.exists(path) and all(r["reused"] for rs in runs.values() for r in rs):
        with open(path) as f:
            return json.load(f)
    t0 = time.time()
    with open(os.path.join(ctx.work, "measures.log"), "a") as log, contextlib.redirect_stdout(log):
        result = claim.measure(runs, ctx)
    print(f"  measured claim {claim.id} ({claim.measure.__name__}) in {time.time() - t0:.1f} s", flush=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f)
    return result


def run_grid(claims, steps=None, seeds=None, quick=False, work="results/runs", results="results", extra=(),
             ckpt=None, fresh=False, threads=0, plan_only=False, command=None):
    """Plan, run, measure, judge, write results/claims.md and one figure per claim. extra: --key=value for every
    run (the tests' tiny model); the settings' own flags come after it and win. command: what claims.md says
    wrote it."""
    size = "quick" if quick else "full"
    ctx = SimpleNamespace(size=size, steps=steps or STEPS[size], seeds=list(seeds or (SEEDS[:1] if quick else SEEDS)),
                          work=os.path.abspath(work), results=results, extra=list(extra), ckpt=ckpt, fresh=fresh,
                          threads=[f"--threads={threads}"] if threads else [], done_argv={},
                          command=command or "bench/claims.py run_grid(...)" + (" quick" if quick else ""))
    jobs, by_claim = plan(claims, ctx)
    est = {j.key: estimate_s(j) for j in jobs}
    pre = [j for j in jobs if j.kind == "pretrain"]
    rl = [j for j in jobs if j.kind != "pretrain"]
    n_pre = sum(config.parse_config(j.argv).get("pretrain_steps", config.Config.pretrain_steps) for j in pre)
    print(f"plan ({size}): {len(pre)} pretraining runs ({n_pre:,} steps), {len(rl)} RL runs "
          f"({sum(config.parse_config(j.argv)['rl_steps'] for j in rl):,} steps), "
          f"claims {','.join(str(c.id) for c in claims)}, seeds {ctx.seeds}: about "
          f"{sum(est.values()) / 60:.0f} minutes on a 2-core CPU (estimated; measurements on the models not counted)")
    for j in jobs:
        print(f"  {est[j.key]:6.0f} s  {j.label}  ->  {os.path.relpath(j.out_dir)}")
    if plan_only:
        return None
    os.makedirs(ctx.work, exist_ok=True)
    with open(os.path.join(ctx.work, ".gitignore"), "w") as f:
        f.write("*\n")  # checkpoints and logs stay out of git; results/claims.md and the figures do not
    t_grid, done, spent = time.time(), {}, 0.0
    for i, job in enumerate(jobs):
        done[job.key] = r = run_job(job, ctx)
        spent += est[job.key]
        state = "reused" if r["reused"] else f"FAILED: {r['error']}" if r["error"] else "done"
        print(f"[{i + 1}/{len(jobs)}] {job.label}: {state} in {r['wall_s']:.1f} s (estimated {est[job.key]:.0f} s); "
              f"{(time.time() - t_grid) / 60:.1f} min so far, estimated {spent / 60:.1f}", flush=True)
    outcomes = []
    for claim in claims:
        runs = {name: [done[j.key] for j in js] for name, js in by_claim[claim.id].items()}
        failed = [(name, r) for name, rs in runs.items() for r in rs if r["error"]]
        if failed:
            rows = [(name, f"failed (seed {r['seed']}): {r['error']} (log: {os.path.relpath(r['out_dir'])}/log.txt)")
                    for name, r in failed]
            out = dict(rows=rows, verdict=f"not measured: {len(failed)} run(s) failed", panels=[])
        else:
            try:
                out = claim.analyse(runs, ctx, measured_for(claim, runs, ctx))
            except Exception as e:  # the table still gets written, and says what broke
                traceback.print_exc()
                out = dict(rows=[(name, "–") for name in runs], verdict=f"not measured: the analysis failed ({e!r})",
                           panels=[])
        if out["panels"]:
            out["figure"] = f"claim{claim.id:02d}.svg"
            write_figure(os.path.join(results, out["figure"]), f"{claim.id}. {claim.title}", out["panels"])
        outcomes.append((claim, runs, out))
    write_table(os.path.join(results, "claims.md"), outcomes, ctx, time.time() - t_grid,
                [(j, done[j.key]) for j in jobs])
    print(f"wrote {os.path.join(results, 'claims.md')} and {sum('figure' in o for *_, o in outcomes)} figures in "
          f"{(time.time() - t_grid) / 60:.1f} min")
    return outcomes


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def git_state():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"commit {head}" + (" with local changes" if dirty else "") if head else "no git commit"
    except (OSError, subprocess.SubprocessError):
        return "no git commit"


def write_table(path, outcomes, ctx, wall_s, jobs):
    lines = ["# The lectures' claims, measured", "",
             f"Written by `{ctx.command}` ({git_state()}, torch {torch.__version__}, {torch.get_num_threads()} "
             f"threads) on {time.strftime('%Y-%m-%d')}: {ctx.steps} RL steps a run, seeds "
             f"{', '.join(map(str, ctx.seeds))} (a claim marked 1 seed uses the first), {wall_s / 60:.1f} minutes. "
             f"Every figure comes from the runs under `{os.path.relpath(ctx.work)}/` (each its `metrics.jsonl` and "
             "`log.txt`); every verdict states its threshold. Measured figures are per seed, in the order of the "
             "seeds.", "",
             "| # | claim | setting | measured (per seed) | verdict |", "| --- | --- | --- | --- | --- |"]
    for claim, runs, out in outcomes:
        n = len(next(iter(runs.values())))
        for i, (setting, measured) in enumerate(out["rows"]):
            title = f"{claim.title} ({n} seed{'s' if n > 1 else ''})" if i == 0 else ""
            lines.append(f"| {claim.id} | {cell(title)} | {cell(setting)} | {cell(measured)} | "
                         f"{cell(out['verdict']) if i == 0 else ''} |")
    for claim, runs, out in outcomes:
        lines += ["", f"## {claim.id}. {claim.title}", "", claim.how, "", f"Verdict: {out['verdict']}."]
        if "figure" in out:
            lines += ["", f"![claim {claim.id}]({out['figure']})"]
        if out.get("notes"):
            lines += [""] + out["notes"]
    lines += ["", "## Runs", "", "| run | seconds | out_dir |", "| --- | --- | --- |"]
    for job, r in jobs:
        state = f"failed: {r['error']}" if r["error"] else f"{r['wall_s']:.1f}" + (" (reused)" if r["reused"] else "")
        lines.append(f"| {cell(job.label)} | {cell(state)} | `{os.path.relpath(job.out_dir)}` |")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# -------------------------------------------------------------------------------------------- figures
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")
PW, PH, PAD = 360, 240, 46  # one panel's size in pixels, and its margin


def write_figure(path, title, panels):
    """Panels side by side in one hand-written SVG. A panel: dict(title, series, x = the x-axis label, RL step by
    default); a series: dict(label, pts [(x, y)], color, dash, dots): a line, dashed or not, or dots alone."""
    legend = max(len(p["series"]) for p in panels)
    w, h = PW * len(panels), 30 + PH + 15 * legend + 10
    body = [f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="14">{html.escape(title)}</text>']
    for k, p in enumerate(panels):
        body += panel_svg(k * PW, 30, p)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">'
                '<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")


def panel_svg(x0, y0, p):
    title = p["title"]
    cut = title.rfind(" ", 0, 56) if len(title) > 56 else -1  # two lines where one would run into the next panel
    out = [f'<text x="{x0 + PW / 2}" y="{y0 + 12 + 12 * i}" text-anchor="middle" font-size="11">{html.escape(t)}'
           '</text>' for i, t in enumerate([title] if cut < 0 else [title[:cut], title[cut + 1:]])]
    pts = [(x, y) for s in p["series"] for x, y in s["pts"] if y is not None and math.isfinite(y)]
    if not pts:
        return out + [f'<text x="{x0 + PW / 2}" y="{y0 + PH / 2}" text-anchor="middle" font-size="11">no data</text>']
    xlo, xhi = min(x for x, _ in pts), max(x for x, _ in pts)
    ylo, yhi = min(y for _, y in pts), max(y for _, y in pts)
    xhi, yhi = (xhi if xhi > xlo else xlo + 1), (yhi if yhi > ylo else ylo + abs(ylo) * 0.1 + 0.1)
    ylo, yhi = ylo - 0.05 * (yhi - ylo), yhi + 0.05 * (yhi - ylo)
    sx = lambda x: x0 + PAD + (x - xlo) / (xhi - xlo) * (PW - 1.4 * PAD)
    sy = lambda y: y0 + PH - PAD + (ylo - y) / (yhi - ylo) * (PH - 1.6 * PAD)
    out.append(f'<rect x="{x0 + PAD}" y="{y0 + 0.6 * PAD}" width="{PW - 1.4 * PAD}" height="{PH - 1.6 * PAD}" '
               'fill="none" stroke="#999"/>')
    for v in (ylo, (ylo + yhi) / 2, yhi):
        out.append(f'<text x="{x0 + PAD - 4}" y="{sy(v) + 4:.1f}" text-anchor="end" font-size="10">{v:.3g}</text>')
    for v in (xlo, xhi):
        out.append(f'<text x="{sx(v):.1f}" y="{y0 + PH - PAD + 14}" text-anchor="middle" font-size="10">{v:g}</text>')
    out.append(f'<text x="{x0 + PAD + (PW - 1.4 * PAD) / 2}" y="{y0 + PH - PAD + 28}" text-anchor="middle" '
               f'font-size="10">{html.escape(p.get("x", "RL step"))}</text>')
    for i, s in enumerate(p["series"]):
        good = [(x, y) for x, y in s["pts"] if y is not None and math.isfinite(y)]
        if len(good) > 1 and not s["dots"]:
            dash = ' stroke-dasharray="5,3"' if s["dash"] else ""
            out.append(f'<polyline points="{" ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)}" fill="none" '
                       f'stroke="{s["color"]}" stroke-width="1.5"{dash}/>')
        if s["dots"] or len(good) == 1:
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{s["color"]}"/>' for x, y in good]
        ly = y0 + PH + 15 * i
        out.append(f'<line x1="{x0 + PAD}" y1="{ly - 4}" x2="{x0 + PAD + 18}" y2="{ly - 4}" stroke="{s["color"]}" '
                   f'stroke-width="2"{" stroke-dasharray=&quot;4,2&quot;" if s["dash"] else ""}/>')
        out.append(f'<text x="{x0 + PAD + 24}" y="{ly}" font-size="10">{html.escape(s["label"])}</text>')
    return out


# -------------------------------------------------------------------------------------------- command line
def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one seed, fewer steps, the same claims (~10 min)")
    ap.add_argument("--only", default="", help="comma-separated claim numbers, e.g. 1,3 (default: all)")
    ap.add_argument("--seeds", default="", help=f"comma-separated seeds (default {','.join(map(str, SEEDS))}; "
                                                "--quick: the first); a 1-seed claim uses the first")
    ap.add_argument("--steps", type=int, default=0, help=f"RL steps of every run (default {STEPS['full']}, --quick "
                                                         f"{STEPS['quick']})")
    ap.add_argument("--ckpt", default="", help="start every seed's RL from this checkpoint instead of pretraining "
                                               "the default recipe (the other recipes still pretrain)")
    ap.add_argument("--work", default="results/runs", help="where the runs go (each its own out_dir)")
    ap.add_argument("--results", default="results", help="where claims.md and the figures go")
    ap.add_argument("--threads", type=int, default=0, help="train.py --threads for every run (0: torch's default)")
    ap.add_argument("--fresh", action="store_true", help="redo runs whose out_dir holds them already")
    ap.add_argument("--plan", action="store_true", help="print the runs and the estimated time, run nothing")
    a = ap.parse_args(argv)
    claims = the_claims()
    if a.only:
        wanted = {int(x) for x in a.only.split(",")}
        unknown = wanted - {c.id for c in claims}
        if unknown:
            sys.exit(f"error: --only names no claim {sorted(unknown)}; claims are 1-{len(claims)}")
        claims = [c for c in claims if c.id in wanted]
    if a.ckpt and not os.path.isfile(a.ckpt):
        sys.exit(f"error: --ckpt={a.ckpt} is not a file")
    seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else None
    run_grid(claims, steps=a.steps or None, seeds=seeds, quick=a.quick, work=a.work, results=a.results,
             ckpt=a.ckpt or None, fresh=a.fresh, threads=a.threads, plan_only=a.plan,
             command=" ".join(["python bench/claims.py"] + argv))


if __name__ == "__main__":
    main(sys.argv[1:])
