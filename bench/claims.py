"""
bench/claims.py: the lectures' claims about RLVR and GRPO, each a prediction written down before any run, a set of
train.py runs, a measurement and a verdict; one command runs them all and writes the page a student reads.

The idea: a claim is data (`Claim`: settings as train.py flags, seeds, the prediction and threshold in words, what
the table and figure show, a function that measures and one that judges) and the machinery is written once
(`run_grid`): plan the jobs (a setting shared by several claims runs once; one pretraining per recipe and seed), run
them one at a time as `python train.py --key=value ... --out_dir=DIR`, reuse a DIR that holds the finished run of
the same flags, read DIR/metrics.jsonl, judge, and write results/claims.md (the long table, per-seed numbers,
verdicts, runs), results/summary.md (one line per claim, for the README) and one figure per claim (plot.py). Where
the logs are not enough, a few named helpers measure saved models with the project's own pieces (`start_of`,
`draw_batch`, `batch_gradients`, `profile`, `kl_table`, `expert_iteration`). A flag train.py does not know yet (asked
once per grid, from `python train.py --help`) makes its claim "not measured", never a crash.

Expert iteration (claim 12, in this process): each step draws exactly the batch a GRPO step of the same seed would,
keeps the responses the verifier calls correct and takes one cross-entropy step on them, every kept token weighted
alike, with RL's optimizer, learning rate and 10-step warmup. It differs from `--advantage=none
--loss_agg=token-mean` only by the step's scale, which Adam mostly removes.

Run (estimates for a 2-core CPU):
    python bench/claims.py --plan     # every job and its estimated seconds; runs nothing
    python bench/claims.py --quick    # ~13 min: one seed, 5 RL steps a run: a smoke test, not a measurement
    python bench/claims.py            # ~75 min: 40 RL steps a run, 3 seeds where seed noise is large
    python bench/claims.py --only=4,5 --threads=2 --fresh
Shapes: P prompts, G group size, B = P*G rows, T time.
"""
import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import checkpoint  # noqa: E402
import config  # noqa: E402
import train  # noqa: E402
from advantage import METHODS, group_advantages  # noqa: E402
from data.tasks import supervised_pairs  # noqa: E402
from data.tokenizer import EOS_ID, PAD_ID  # noqa: E402
from evaluation import evaluate, pass_at_k, thinks  # noqa: E402
from grpo import KL_KINDS, kl_estimate, masked_mean  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from plot import figure  # noqa: E402
from sample import sample  # noqa: E402
from verify import grade, grade_samples  # noqa: E402


# -------------------------------------------------------------------------------------------- claims are data
@dataclass(frozen=True)
class Setting:
    name: str               # as the tables show it; "{half}" becomes half the RL steps
    argv: tuple = ()        # train.py flags on top of the grid's; "{half}" and "{passk}" are filled in
    recipe: str = "base"    # the pretraining it starts from (RECIPES)
    kind: str = "rl"        # rl: python train.py | ei: expert_iteration, in this process
    optional: bool = False  # the claim is judged without it while train.py lacks one of its flags


def S(name, *argv, **kw):
    return Setting(name, argv, **kw)


@dataclass(frozen=True)
class Claim:
    id: int
    title: str
    settings: tuple
    seeds: int              # 3 where the effect is small against seed noise, else 1 (the first seed)
    prediction: str         # written before any run, like the threshold
    threshold: str
    verdict: object         # (runs, measured) -> `out(...)`; runs: setting name -> its runs by seed, or None
    look: str               # the figure's first sentence, what to look at (the takeaway is its second)
    charts: tuple = ()      # (title, key): a step record's key, or "eval.<key>" of the held-out evaluations
    cols: tuple = ()        # step keys the table shows per setting (first 5 steps → last third), after held-out acc
    measure: object = None  # (runs, ctx) -> a JSON-able dict of what the logs do not hold
    evals: tuple = (2, 1)   # held-out evaluations a run after its start (full grid, --quick)
    long: bool = False      # LONG RL steps instead of STEPS
    steps: int = 0          # this claim's RL steps in the full grid, when neither STEPS nor LONG (--quick scales it)
    bucket: str = "weak"    # a negative is: weak (too weak at this scale) | cannot (the experiment cannot show it yet)


@dataclass(frozen=True)
class Recipe:
    full: tuple             # flags of its pretraining (train.py --rl_steps=0), repeated in the RL runs from it
    quick: tuple
    shared: bool = False    # one pretraining (the first seed's) serves every seed: RL methods compared from one start


MUL3 = ("--families=mul", "--digits=3")  # 2 digits has too few distinct problems for a held-out set of 200
RECIPES = {
    "base": Recipe((), ("--pretrain_steps=150",)),  # the default teacher, 700 steps (--quick: 150)
    "short": Recipe(("--pretrain_steps=150",), ("--pretrain_steps=150",)),  # the format is still unreliable
    "think0": Recipe(("--think_prob=0", "--pretrain_steps=500"), ("--think_prob=0", "--pretrain_steps=150")),
    "mix": Recipe(("--families=add,sub,mul",), ("--families=add,sub,mul", "--pretrain_steps=150"), shared=True),
    "weak": Recipe(("--pretrain_steps=300",), ("--pretrain_steps=150",), shared=True),
    "check": Recipe(("--check_lines=3", "--error_prob=0.5"), ("--check_lines=3", "--error_prob=0.5",
                                                               "--pretrain_steps=150"), shared=True),
    "mul": Recipe(MUL3, MUL3 + ("--pretrain_steps=150",)),  # 3-digit by 2-digit products: not in its head
    "tool": Recipe(MUL3 + ("--tool_prob=0.5",), MUL3 + ("--tool_prob=0.5", "--pretrain_steps=150")),
    "tool10": Recipe(MUL3 + ("--tool_prob=0.1",), MUL3 + ("--tool_prob=0.1", "--pretrain_steps=150")),
}
SEEDS = (1337, 1, 2)
STEPS, LONG = dict(full=40, quick=5), dict(full=80, quick=6)  # RL steps a run; LONG: claim 12's
EVAL = dict(full=("--passk_problems=0",), quick=("--eval_problems=64", "--passk_problems=0"))  # full: 200 problems
PASSK = dict(full=64, quick=32)  # held-out problems for pass@G where a claim reads it ("{passk}")
MEASURE = dict(full=dict(batches=16, prompts=64), quick=dict(batches=4, prompts=16))  # the helpers' sizes
DEFAULT, HELD_OUT, SAMPLED = S("GRPO (default)"), ("held-out greedy accuracy", "eval.acc"), ("sampled accuracy", "acc")
NO_CLIP = ("--clip_eps=0.99", "--clip_eps_high=99")  # the widest the config allows: ratios in [0.01, 100]
MIX = ("--families=add,sub,mul", "--rl_pool=128")


def beta(b, kind=None):
    return S(f"beta={b}" + (f", {kind} in the loss" if kind else ""), f"--kl_coef={b}",
             *([f"--kl_kind={kind}"] if kind else []))


def profiles(*which, table=False):
    """A claim's measure: `run_profile` of each of its runs' start or final policy, {which: {setting: [per seed]}};
    with table, the exact `kl_table` too."""
    def measure(runs, ctx):
        m = {w: {n: [run_profile(r, MEASURE[ctx.size]["prompts"], w) for r in rs] for n, rs in runs.items()}
             for w in which}
        return dict(m, table=kl_table()) if table else m
    return measure


def the_claims():
    return [
        Claim(1, "Imitation has a ceiling; RL with a verifier passes it", (DEFAULT,), 3,
              "Pretraining on the imperfect teacher ends at or below the teacher's own accuracy; GRPO passes it.",
              "On every seed: held-out greedy accuracy after pretraining <= the teacher's + 0.02; after RL > the "
              "teacher's + 0.05.", v_imitation, "Look at each seed's held-out accuracy against the dashed teacher."),
        Claim(2, "Baselines reduce variance without bias", (
              S("no baseline", "--advantage=none"), S("mean (drgrpo)", "--advantage=drgrpo"), DEFAULT,
              S("leave-one-out (rloo)", "--advantage=rloo")), 1,
              "At the pretrained weights every baseline gives a gradient with a lower noise-to-signal ratio than none, "
              "pointing where RLOO's unbiased one points; RL with a baseline ends at least as accurate.",
              "tr Var[g] / |E g|^2 of one batch's gradient (the same batches for every method) below no-baseline's "
              "for 3/3 baselines; held-out accuracy after RL >= no-baseline's - 0.02 for 3/3.", v_baselines,
              "Look at the no-baseline curve against the three baselines.",
              (SAMPLED, ("gradient norm (before clipping)", "grad_norm")), measure=measure_gradient_noise),
        Claim(3, "All-equal groups are at least p^G + (1-p)^G of a batch", (
              S("G=2, P=64", "--group_size=2", "--prompts_per_step=64"), S("G=4, P=32", "--group_size=4",
              "--prompts_per_step=32"), S("G=8, P=16"), S("G=16, P=8", "--group_size=16", "--prompts_per_step=8")), 1,
              "At 128 completions a step the share of groups with no signal falls as G grows, and stays at or above "
              "p^G + (1-p)^G of the batch's pass rate p (a lower bound when prompts differ in difficulty).",
              "Mean share over the steps strictly falling from G=2 to 16; >= the mean prediction - 0.02 for every G.",
              v_zero_signal, "Look at each solid line (measured) against its dashed twin (predicted).",
              (SAMPLED,), ("zero_signal", "zero_signal_pred")),
        Claim(4, "Per-sequence normalisation biases length (Dr. GRPO); here it picks the mode", (
              S("none, seq-mean-token-mean", "--advantage=none"),
              S("none, token-mean", "--advantage=none", "--loss_agg=token-mean"),
              S("none, seq-sum-constant", "--advantage=none", "--loss_agg=seq-sum-constant"),
              S("grpo, seq-mean-token-mean"), S("grpo, token-mean", "--loss_agg=token-mean"),
              S("grpo, seq-sum-constant", "--loss_agg=seq-sum-constant"),
              S("free length, seq-mean-token-mean", recipe="check", optional=True),
              S("free length, seq-sum-constant", "--loss_agg=seq-sum-constant", recipe="check", optional=True)), 3,
              "The task has no free length: a response is direct (~7 tokens) or worked (~45), which is also the "
              "correctness choice, so the bias shows as a mode. REINFORCE without a baseline under seq-mean-token-mean "
              "is ascent on E[r/|o|] and drifts to direct answers; under the per-token weightings it does not. Given "
              "free length (0-3 redundant check lines), wrong responses grow under seq-mean-token-mean only.",
              "Think share over the last third: none + token-mean and none + seq-sum-constant each >= none + "
              "seq-mean-token-mean's + 0.3 on >= 2/3 seeds. Free length (if train.py has --check_lines): len_wrong "
              "grows (first 5 steps to the last third) >= 3 tokens more than under seq-sum-constant on >= 2/3 seeds.",
              v_length_bias, "Look at the think share of the runs without a baseline.",
              (("think share", "think_share"), ("length of wrong responses", "len_wrong")),
              ("think_share", "len_wrong")),
        Claim(5, "The KL penalty keeps the policy near its start, if beta is large enough", (
              S("beta=0"), beta(0.3), beta(1), beta(3), beta(1, "k1")), 1,
              "beta=0.1 was far too weak (the policy gradient weighs a token by |A| ~ 1, the KL by ~ beta |log "
              "ratio|). Over beta = 0, 0.3, 1, 3 the final policy's KL to its start falls; with k1 in the loss (its "
              "expected gradient is 0) there is no pull at all.",
              "KL(pi || pi_start) per token (k3) from two independent draws of G samples of held-out prompts; noise: "
              "the largest gap between a run's two draws. KL(3) < KL(1) < KL(0), each gap > 2 x noise; k1's KL at "
              "beta=1 > k3's + 2 x noise.", v_kl_penalty, "Look at the KL to the start (two dots a run) against beta.",
              (SAMPLED,), measure=profiles("final")),
        Claim(6, "Clipping matters once updates reuse samples", (
              S("mu=1, clip 0.2"), S("mu=1, clip off", *NO_CLIP), S("mu=4, clip 0.2", "--updates_per_batch=4"),
              S("mu=4, clip off", "--updates_per_batch=4", *NO_CLIP)), 1,
              "On-policy (mu=1) the ratio is 1 and the clip changes nothing; at mu=4 without it the ratio runs away "
              "and learning suffers.",
              "At mu=4 without the clip: a larger largest ratio than with it; held-out accuracy lower by > 0.03 or "
              "final entropy below half.", v_clipping, "Look at the largest ratio per step of the two mu=4 runs.",
              (("largest importance ratio per step", "ratio_max"), SAMPLED), ("clip_frac", "entropy")),
        Claim(7, "A format reward helps while the format is unreliable, and must not pay for junk", (
              S("no format bonus", recipe="short"), S("format bonus 0.1", "--format_bonus=0.1", recipe="short")), 1,
              "From a 150-step pretraining a format bonus of 0.1 raises the format rate; a bonus for the tags alone "
              "would pay junk that this project's rule refuses.",
              "Mean format rate over the steps higher with the bonus by >= 0.02 (not measured if the start already "
              "formats >= 0.95).", v_format, "Look at the format rate with and without the bonus.",
              (("format rate", "format_rate"), SAMPLED), ("format_rate",)),
        Claim(8, "Kimi's length reward must wait: applied too early it disrupts learning", (
              S("no length reward"), S("length reward from step 0", "--length_weight=1.0", "--length_start=0"),
              S("length reward from step {half}", "--length_weight=1.0", "--length_start={half}")), 3,
              "Rerun after the shaping fix (the length reward centred on its own, never divided by sigma): from step "
              "0 it stops the shift to thinking and costs accuracy; from half way it does not (before the fix: 2/3).",
              "Held-out accuracy with the reward from step 0 ends > 0.03 below the late start's on >= 2/3 seeds.",
              v_length_reward, "Look at the think share of the early start against the late one.",
              (("think share", "think_share"), ("response length", "response_len"), SAMPLED),
              ("think_share", "response_len")),
        Claim(9, "Curriculum and dynamic sampling speed up learning on a mix of easy and hard prompts", (
              S("uniform", *MIX, recipe="mix"), S("curriculum", *MIX, "--curriculum=true", recipe="mix"),
              S("dynamic sampling", *MIX, "--dynamic_sampling=true", recipe="mix")), 3,
              "On 128 prompts of add, sub and mul (each seen ~7 times, so success estimates move; mul pretrained: hard "
              "but learnable) both reach a given held-out accuracy in fewer steps than uniform sampling. Dynamic "
              "sampling draws 2P prompts a step: per sampled completion it is not faster.",
              "Target per seed: the start + half of uniform's gain; steps to reach it (an eval every 5 steps) fewer "
              "than uniform's on >= 2/3 seeds, for each method. Not measured if uniform gains < 0.02.", v_curriculum,
              "Look at held-out accuracy against RL steps, then against sampled completions.",
              (HELD_OUT, ("zero-signal share of the trained groups", "zero_signal")), ("zero_signal",),
              evals=(10, 2)),
        Claim(10, "GRPO cannot learn what it never samples", (
              S("default teacher"), S("teacher that never thinks", recipe="think0"),
              S("lin, never pretrained", "--families=lin", "--passk_problems={passk}")), 1,
              "From a teacher that never shows its work the model never starts to think; on a family it never saw, "
              "pass@G is ~0 and RL gains nothing.",
              "Think share of the never-thinking teacher's model < 0.05 at the end; on lin, pass@G at the start < "
              "0.05 and held-out accuracy moves < +0.05.", v_never, "Look at the think share of the two teachers.",
              (("share of sampled responses that think", "think_share"), HELD_OUT), ("think_share",)),
        Claim(11, "Chain of thought emerges without a reward for it", (DEFAULT,), 3,
              "The share of responses that think rises from under half to nearly all, unrewarded, because at the "
              "start thinking samples are right more often than direct ones.",
              "On every seed: think share < 0.5 at step 1 and > 0.9 over the last third; at the start (two draws of "
              "G samples of held-out prompts) thinking samples more accurate than direct ones.", v_thinking,
              "Look at each seed's think share over the steps.", measure=profiles("start")),
        Claim(12, "Expert iteration vs RL, which also pushes wrong answers down", (
              S("expert iteration", kind="ei", recipe="weak"), S("positives only: none, token-mean",
              "--advantage=none", "--loss_agg=token-mean", recipe="weak"), S("with negatives: drgrpo, token-mean",
              "--advantage=drgrpo", "--loss_agg=token-mean", recipe="weak"), S("GRPO", recipe="weak")), 3,
              "From a weaker start (300 pretraining steps), with the weighting confound removed, pushing wrong "
              "answers down (drgrpo) beats positives only (none, and expert iteration, its supervised twin) and keeps "
              "more diversity. RAFT++ (Xiong et al. 2025) found rejection sampling competitive at small scale: a tie "
              "is a legitimate outcome.",
              "drgrpo ends > 0.02 above none in held-out accuracy on >= 2/3 seeds; its final entropy and pass@G (two "
              "draws each) above both positives-only arms' on >= 2/3 seeds.", v_expert,
              "Look at accuracy and entropy of the positives-only arms against drgrpo's.",
              (HELD_OUT, ("entropy per token", "entropy"), SAMPLED), ("think_share",), profiles("final"), (4, 1), True),
        Claim(13, "GRPO's sigma favours the too-easy and too-hard prompts (Dr. GRPO)", (DEFAULT,), 3,
              "Dividing by the group's sigma multiplies a group with 1 or G-1 right answers by 1/0.33 and a balanced "
              "one by 1/0.5 (G=8): at the pretrained weights those groups carry more of GRPO's gradient than of "
              "Dr. GRPO's.",
              "Their share of the gradient (their part's projection on the whole, mean over batches): GRPO's >= "
              "Dr. GRPO's + 0.05 on every seed (reproduced), on >= 2/3 (partly).", v_sigma,
              "Look at the two dots of each seed.", measure=measure_sigma_share),
        Claim(14, "Reward maximisation collapses diversity; the KL penalty slows it", (S("beta=0"), beta(1)), 1,
              "Without a KL penalty the policy sharpens: its entropy on held-out prompts falls below half its start "
              "and pass@G gains much less than pass@1. With beta=1 the entropy falls less.",
              "beta=0: final entropy < 0.5 x the start's, and pass@G - pass@1 shrinks by >= 0.1; beta=1: final "
              "entropy above beta=0's by > 2 x the draws' noise.", v_diversity,
              "Look at entropy, pass@1 and pass@G from the start to the end of each run.",
              (("entropy per token, logged", "entropy"),), measure=profiles("start", "final")),
        Claim(15, "A few thousand good prompts are enough (Qwen3 used ~4k)", (
              S("16 prompts", "--rl_pool=16"), S("128 prompts", "--rl_pool=128"), S("2000 prompts"),
              S("2000, filtered by the start's pass@8", "--filter_pool=true", optional=True)), 3,
              "What RL teaches here is mostly a mode (to think), so a small pool goes far: 128 prompts do about as "
              "well as 2000 and only 16 fall behind; dropping the always-right and never-right prompts (the start's "
              "pass@8) learns at least as well.",
              "Held-out accuracy after RL, seed means: 128 within 0.03 of 2000; 16 below it by > 0.03; filtered (if "
              "train.py has --filter_pool) >= unfiltered - 0.01.", v_data, "Look at accuracy against the pool size.",
              (HELD_OUT,)),
        Claim(16, "An unbiased KL value is not an unbiased KL gradient", (beta(1, "k1"), beta(1, "k2"), beta(1)), 1,
              "k1 and k3 estimate KL(pi || ref) without bias, k2 does not; yet in the loss their expected gradients "
              "are 0 (k1), grad KL(pi || ref) (k2) and grad KL(ref || pi) (k3): at beta=1 k2 and k3 pull, k1 not.",
              "Exact (3 random 6-token categoricals, float64): |E k - KL| < 1e-9 for k1 and k3, > 1e-6 for k2; E[grad "
              "k] = 0 / forward / reverse within 1e-9. Runs: KL to the start of k2 and of k3 each below k1's by > 2 x "
              "noise.", v_kl_gradient, "Look at the KL to the start of the three runs.", (SAMPLED,),
              measure=profiles("final", table=True)),
        Claim(17, "After the clip: CISPO and GSPO when samples are reused or stale", tuple(
              S(f"{name}, {cond}", *flags, *([f"--policy_loss={loss}"] if loss != "clip" else []))
              for cond, flags in (("mu=4", ("--updates_per_batch=4",)), ("2 steps stale", ("--staleness=2",)),
                                  ("4 steps stale", ("--staleness=4",)))
              for name, loss in (("clip", "clip"), ("GSPO", "gspo"), ("CISPO", "cispo"))), 1,
              "CISPO (clip the importance weight, keep every token's gradient) and GSPO (one ratio per sequence) learn "
              "at least as well as the token clip at mu=4 and with samples from weights 2 and 4 steps old, and better "
              "once.",
              "Held-out accuracy >= the clip's - 0.02 in every condition for both; > the clip's + 0.02 at least once.",
              v_after_clip, "Look at the accuracy of the three losses in each condition.",
              (HELD_OUT, ("clip fraction", "clip_frac"), ("largest ratio", "ratio_max")),
              ("clip_frac", "ratio_min", "ratio_max", "entropy"), steps=60, bucket="cannot"),
        Claim(18, "A calculator tool: RL keeps what the teacher showed it", (
              S("no tool", recipe="mul"), S("teacher calls a calculator on half its problems", recipe="tool"),
              S("teacher calls it on 10%", recipe="tool10")), 1,
              "On 3-digit by 2-digit multiplication, which the model cannot do in its head, a teacher who calls a "
              "calculator on half its problems gives RL a tool to keep: the share of responses that call it rises, and "
              "accuracy ends above the run without it. A teacher who calls it on 10% leaves RL enough to amplify: its "
              "call share rises too.",
              "Held-out accuracy with the 50% teacher > the no-tool run's + 0.02; tool share (rl records' tool_rate) "
              "over the last third above the first 5 steps' for both teachers.", v_tool,
              "Look at the tool share over the steps.",
              (("tool share", "tool_rate"), HELD_OUT), ("tool_rate", "acc_tool", "acc_no_tool"), bucket="cannot"),
    ]


# -------------------------------------------------------------------------------------------- reading the runs
def records(run, stage):
    return [r for r in run["records"] if r.get("stage") == stage]


def steps(run, key):
    """[(rl_step, value)] of a run's RL step records, or with key "eval.<key>" of its held-out evaluations (where RL
    started, step 0, first); null values left out."""
    stage, key = ("rl_eval", key[5:]) if key.startswith("eval.") else ("rl", key)
    return [(r["rl_step"], r[key]) for r in records(run, stage) if r.get(key) is not None]


def mean(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def final(run, key="eval.acc", at=-1):
    pts = steps(run, key)
    return pts[at][1] if pts else float("nan")


def start(run, key="eval.acc"):
    return final(run, key, 0)


def head(run, key, n=5):
    return mean(v for _, v in steps(run, key)[:n])


def tail(run, key, frac=1 / 3):
    pts = steps(run, key)
    return mean(v for _, v in pts[-max(1, round(len(pts) * frac)):])


def seedmean(runs, f, *args):
    """{setting: the mean over its seeds of f(run, *args)}."""
    return {n: mean(f(r, *args) for r in rs) for n, rs in runs.items() if rs}


def per_seed(values):
    return " / ".join(v if isinstance(v, str) else "–" if v is None or not math.isfinite(v) else f"{v:.3f}"
                      for v in values)


def need(n):
    """Seeds a verdict needs: all of 1 or 2, 2 of 3."""
    return n // 2 + 1


def knob(run, key):
    """A train.py knob as the run's flags set it (the last --key=value wins), else config.Config's default."""
    default = getattr(config.Config, key)
    for a in reversed(run["argv"]):
        if a.startswith(f"--{key}="):
            v = a.split("=", 1)[1]
            return v.lower() in ("true", "1") if isinstance(default, bool) else type(default)(v)
    return default


def chart(title, runs, key, extra=(), x=None, x_label="RL step"):
    """Each setting's curve of key, the mean over its seeds (of a 5-step running mean, for step records); x(run)
    scales the steps (claim 9: completions a step)."""
    k, present = 1 if key.startswith("eval.") or key == "ratio_max" else 5, {n: rs for n, rs in runs.items() if rs}
    seeds, series = max(len(rs) for rs in present.values()), []
    for n, rs in present.items():
        by_step = {}
        for r in rs:
            pts = steps(r, key)
            for i, (s, _) in enumerate(pts):
                by_step.setdefault(s * (x(r) if x else 1), []).append(mean(v for _, v in pts[max(0, i - k + 1):i + 1]))
        series.append(dict(label=n, pts=sorted((s, mean(vs)) for s, vs in by_step.items())))
    note = ", ".join(([f"mean of {seeds} seeds"] if seeds > 1 else []) + ([f"{k}-step running mean"] if k > 1 else []))
    return dict(title=title + (f" ({note})" if note else ""), x_label=x_label, series=series + list(extra))


def dots(title, points, x_label):
    return dict(title=title, x_label=x_label, series=[dict(label=n, pts=p, dots=True) for n, p in points.items()])


def out(parts, takeaway, rows=None, more=(), charts=(), notes=(), word=None, bucket=None):
    """A verdict. parts: [(what must hold, whether it did; None: a remark)] give the word (reproduced if all hold,
    partly if some), unless word is given (not measured); takeaway: the summary's sentence, the figure's second;
    rows replace the table's default rows, more are added to them; charts are added to the claim's own."""
    held = [ok for _, ok in parts if ok is not None]
    word = word or ("not measured" if not held else "reproduced" if all(held) else "partly reproduced" if any(held)
                    else "not reproduced")
    detail = "; ".join(what if ok is None else f"{what}: {'yes' if ok else 'no'}" for what, ok in parts)
    return dict(word=word, verdict=f"{word}: {detail}", takeaway=takeaway, rows=rows, more=list(more),
                charts=list(charts), notes=list(notes), bucket=bucket)


# -------------------------------------------------------------------------------------------- the verdicts
def v_imitation(runs, m):
    rs = runs[DEFAULT.name]
    corpus = [records(r, "summary")[-1]["corpus_acc"] for r in rs]  # the teacher's accuracy on its own corpus
    before, after, last = [start(r) for r in rs], [final(r) for r in rs], steps(rs[0], "eval.acc")[-1][0]
    teacher = dict(label="the teacher (mean of seeds)", dash=True, pts=[(0, mean(corpus)), (last, mean(corpus))])
    return out([("after pretraining <= the teacher + 0.02 on every seed",
                 all(b <= c + 0.02 for b, c in zip(before, corpus))),
                ("after RL > the teacher + 0.05 on every seed", all(a > c + 0.05 for a, c in zip(after, corpus)))],
               f"Imitation ended at {mean(before):.2f}, under its teacher's {mean(corpus):.2f}; RL against the "
               f"verifier took it to {mean(after):.2f}.",
               [("teacher (its corpus' accuracy)", per_seed(corpus)), ("after pretraining", per_seed(before)),
                ("after RL", per_seed(after))], charts=[chart("held-out greedy accuracy", runs, "eval.acc", [teacher])])


def v_baselines(runs, m):
    (ref, _), *others = runs.items()
    ms = {n: m[knob(rs[0], "advantage")] for n, rs in runs.items()}
    ns, acc = {n: v["noise_to_signal"] for n, v in ms.items()}, seedmean(runs, final)
    fmt = lambda v: "unresolved" if v is None else f"{v:.1f}"  # noqa: E731
    return out([(f"noise/signal below no-baseline's for every baseline ({m['batches']} batches)",
                 all(ns[n] is not None and (ns[ref] is None or ns[n] < ns[ref]) for n, _ in others)),
                ("held-out accuracy >= no-baseline's - 0.02 for every baseline",
                 all(acc[n] >= acc[ref] - 0.02 for n, _ in others))],
               f"A baseline cut the gradient's noise-to-signal from {fmt(ns[ref])} to {fmt(ns[others[-1][0]])} (rloo); "
               f"RL ended at {mean(acc[n] for n, _ in others):.2f} with one, {acc[ref]:.2f} without.",
               more=[(n, f"at the start: noise/signal {fmt(ns[n])}, cosine to RLOO's mean gradient {v['cos_rloo']:.2f}")
                     for n, v in ms.items()])


def v_zero_signal(runs, m):
    s, p = (list(seedmean(runs, lambda r, k: mean(v for _, v in steps(r, k)), k).values())
            for k in ("zero_signal", "zero_signal_pred"))
    dashed = [dict(c, label=c["label"] + ", predicted", dash=True)
              for c in chart("", runs, "zero_signal_pred")["series"]]
    return out([(f"the share falls with G ({', '.join(f'{v:.2f}' for v in s)})", all(a > b for a, b in zip(s, s[1:]))),
                ("at or above the prediction - 0.02 for every G", all(a >= b - 0.02 for a, b in zip(s, p)))],
               f"Groups with no signal fell from {s[0]:.2f} of a batch at G=2 to {s[-1]:.2f} at G=16, against "
               f"{p[0]:.2f} and {p[-1]:.2f} predicted from the pass rate alone.",
               charts=[chart("zero-signal share (dashed: p^G + (1-p)^G)", runs, "zero_signal", dashed)])


def v_length_bias(runs, m):
    names, think = list(runs), seedmean(runs, tail, "think_share")
    n = len(runs[names[0]])
    beats = lambda k: sum(tail(a, "think_share") >= tail(b, "think_share") + 0.3 for a, b in zip(  # noqa: E731
        runs[k], runs[names[0]]))
    parts = [(f"{k[6:]} thinks >= 0.3 more than seq-mean-token-mean on {beats(k)}/{n} seeds", beats(k) >= need(n))
             for k in names[1:3]]
    if runs[names[6]] and runs[names[7]]:
        grow = lambda r: tail(r, "len_wrong") - head(r, "len_wrong")  # noqa: E731
        wins = sum(a >= b + 3 for a, b in zip(map(grow, runs[names[6]]), map(grow, runs[names[7]])))
        parts.append((f"free length: wrong responses grew >= 3 tokens more on {wins}/{n} seeds", wins >= need(n)))
    else:
        parts.append(("free length not measured (train.py has no --check_lines yet)", None))
    return out(parts, f"Without a baseline, seq-mean-token-mean ended thinking on {think[names[0]]:.2f} of responses, "
               f"token-mean on {think[names[1]]:.2f}, seq-sum-constant on {think[names[2]]:.2f}; with GRPO's baseline "
               f"all three on {min(think[k] for k in names[3:6]):.2f} or more.")


def kl_of(m, runs, key="kl_token"):
    """Each setting's measured KL to the start (its draws' mean, over seeds) and the noise: the largest gap between a
    run's two draws."""
    return ({n: mean(d[key] for draws in m[n] for d in draws) for n in runs},
            max(abs(draws[0][key] - draws[1][key]) for n in runs for draws in m[n]))


def kl_more(m):
    return [(n, f"KL to the start {per_seed([d['kl_token'] for ds in dss for d in ds])} per token (two draws a seed), "
                f"{mean(d['kl_response'] for ds in dss for d in ds):.2f} nats per response") for n, dss in m.items()]


def v_kl_penalty(runs, m):
    b0, b03, b1, b3, k1 = runs
    (kl, noise), acc, m = kl_of(m["final"], runs), seedmean(runs, final), m["final"]
    pts = {n: [(knob(runs[n][0], "kl_coef"), d["kl_token"]) for ds in m[n] for d in ds] for n in runs}
    return out([(f"KL(3) < KL(1) < KL(0) per token, each gap > 2 x noise {noise:.4f}",
                 kl[b0] - kl[b1] > 2 * noise and kl[b1] - kl[b3] > 2 * noise),
                ("k1 at beta=1 above k3's + 2 x noise (no pull)", kl[k1] > kl[b1] + 2 * noise)],
               f"KL to the start per token: {kl[b0]:.3f}, {kl[b03]:.3f}, {kl[b1]:.3f}, {kl[b3]:.3f} at beta 0, 0.3, 1, "
               f"3 (accuracy {acc[b0]:.2f} to {acc[b3]:.2f}); {kl[k1]:.3f} with k1 in the loss.", more=kl_more(m),
               charts=[dots("KL to the start per token, two draws a run", pts, "beta")])


def v_clipping(runs, m):
    mu1, mu1_off, mu4, mu4_off = runs
    largest = lambda r: max((v for _, v in steps(r, "ratio_max")), default=float("nan"))  # noqa: E731
    ratio, acc, ent = seedmean(runs, largest), seedmean(runs, final), seedmean(runs, tail, "entropy")
    return out([(f"largest ratio at mu=4: {ratio[mu4_off]:.2f} unclipped > {ratio[mu4]:.2f} clipped",
                 ratio[mu4_off] > ratio[mu4]),
                (f"unclipped accuracy {acc[mu4_off]:.3f} < {acc[mu4]:.3f} - 0.03 or entropy {ent[mu4_off]:.3f} < half "
                 f"of {ent[mu4]:.3f}", acc[mu4_off] < acc[mu4] - 0.03 or ent[mu4_off] < 0.5 * ent[mu4]),
                (f"control, mu=1: accuracy {acc[mu1]:.3f} clipped, {acc[mu1_off]:.3f} not (rho = 1)", None)],
               f"Reusing each batch 4 times, the ratio reached {ratio[mu4_off]:.0f} without the clip and accuracy "
               f"ended at {acc[mu4_off]:.2f}, against {acc[mu4]:.2f} clipped; at mu=1 the clip changed nothing.")


JUNK = [  # (response, truth): what a policy farming a format bonus might write
    ("<think></think><answer>banana</answer>", "12"), ("<think>12</think><answer>12 or 13</answer>", "12"),
    ("<think></think><answer>5+7</answer>", "12"), ("<think></think><answer></answer>", "12"),
    ("<think>7+5=12</think><answer>1 2</answer>", "12"), ("Sure! <think></think><answer>12</answer>", "12"),
    ("<think></think><answer>13</answer>", "12"),  # a wrong number: formatted under both rules, and rightly so
]
TAGS_ALONE = re.compile(r"\s*<think>.*</think>\s*<answer>.*</answer>\s*", re.S)  # an R1-style "format" check


def junk_table():
    return table(["response", "a bonus for the tags alone pays", "this project: Grade.formatted (reason)"],
                 [(f"`{t}`", "yes" if TAGS_ALONE.search(t) else "no", f"{grade(t, a).formatted} ({grade(t, a).reason})")
                  for t, a in JUNK])


def v_format(runs, m):
    off, on = runs
    first, rate = mean(steps(r, "format_rate")[0][1] for r in runs[off]), seedmean(runs, tail, "format_rate", 1.0)
    paid = sum(bool(TAGS_ALONE.search(t)) and not grade(t, a).formatted for t, a in JUNK)
    rule = f"{paid} of {len(JUNK)} junk responses would earn a tags-alone bonus that this project's rule refuses"
    notes = ["What a format bonus would pay (verify.grade on hand-written junk, truth 12):"] + junk_table()
    if first >= 0.95:
        return out([(f"the start already formats {first:.2f} of its samples; {rule}", None)], f"Not measured: the "
                   f"start already formatted {first:.2f} of its samples.", notes=notes, word="not measured",
                   bucket="cannot")
    return out([(f"the bonus moved the mean format rate by {rate[on] - rate[off]:+.3f} (>= +0.02)",
                 rate[on] - rate[off] >= 0.02), (rule, None)],
               f"A 0.1 bonus moved the format rate over the steps {rate[off]:.2f} → {rate[on]:.2f}; {rule}.",
               notes=notes)


def v_length_reward(runs, m):
    none, early, late = runs
    hurt, n = sum(final(a) < final(b) - 0.03 for a, b in zip(runs[early], runs[late])), len(runs[none])
    acc = seedmean(runs, final)
    return out([(f"from step 0 > 0.03 below the late start on {hurt}/{n} seeds", hurt >= need(n)),
                ("before the shaping fix (commit bb4ccca) this held on 2/3 seeds", None)],
               f"From step 0 the length reward left accuracy at {acc[early]:.2f}; switched on half way, "
               f"{acc[late]:.2f} (none: {acc[none]:.2f}).")


def v_curriculum(runs, m):
    uni, cur, dyn = runs
    n, targets = len(runs[uni]), [start(r) + 0.5 * (final(r) - start(r)) for r in runs[uni]]
    reach = {k: [next((s for s, v in steps(r, "eval.acc") if v >= t), float("inf")) for r, t in zip(rs, targets)]
             for k, rs in runs.items()}
    per_step = lambda r: (knob(r, "prompts_per_step") * knob(r, "group_size")  # noqa: E731 completions a step
                          * (1 + knob(r, "dynamic_sampling")))
    gain, every = mean(final(r) - start(r) for r in runs[uni]), knob(runs[uni][0], "rl_eval_interval")
    common = dict(more=[(k, f"steps to the target {per_seed([f'{s:g}' for s in reach[k]])}; mul at the end "
                            f"{per_seed([final(r, 'eval.acc_mul') for r in runs[k]])}") for k in runs],
                  charts=[chart("held-out greedy accuracy", runs, "eval.acc", x=per_step,
                                x_label="sampled completions")])
    if gain < 0.02:
        return out([(f"uniform sampling gained {gain:+.3f} (< 0.02): no speed to compare", None)],
                   f"Not measured: uniform sampling gained only {gain:+.3f}.", word="not measured", bucket="cannot",
                   **common)
    faster = {k: sum(a < b for a, b in zip(reach[k], reach[uni])) for k in (cur, dyn)}
    return out([(f"{k} reached the target (an eval every {every} steps) sooner on {faster[k]}/{n} seeds",
                 faster[k] >= need(n)) for k in (cur, dyn)],
               f"Steps to half of uniform's gain: uniform {mean(reach[uni]):g}, curriculum {mean(reach[cur]):g}, "
               f"dynamic sampling {mean(reach[dyn]):g} (which samples twice the completions a step).", **common)


def v_never(runs, m):
    default, think0, lin = (rs[0] for rs in runs.values())
    G = knob(lin, "group_size")
    pass_g, grew, thinking = start(lin, f"eval.pass@{G}"), final(lin) - start(lin), tail(think0, "think_share")
    return out([(f"the never-thinking teacher's model thinks on {thinking:.2f} (< 0.05)", thinking < 0.05),
                (f"lin: pass@{G} at the start {pass_g:.3f} (< 0.05), accuracy moved {grew:+.3f} (< +0.05)",
                 pass_g < 0.05 and grew < 0.05)],
               f"A model whose teacher never showed its work never started thinking ({thinking:.2f}), and lin, never "
               f"pretrained, stayed at {final(lin):.2f}.")


def v_thinking(runs, m):
    rs, draws = runs[DEFAULT.name], m["start"][DEFAULT.name]
    first, last = [steps(r, "think_share")[0][1] for r in rs], [tail(r, "think_share") for r in rs]
    think, direct = ([mean(d[k] for d in ds) for ds in draws] for k in ("acc_think", "acc_direct"))
    return out([("think share < 0.5 at step 1 and > 0.9 at the end on every seed",
                 all(a < 0.5 and b > 0.9 for a, b in zip(first, last))),
                ("at the start thinking samples right more often than direct ones on every seed",
                 all(t > d for t, d in zip(think, direct)))],
               f"The think share rose from {mean(first):.2f} to {mean(last):.2f} unrewarded: at the start thinking "
               f"samples were right {mean(think):.2f} of the time, direct ones {mean(direct):.2f}.",
               [("think share, step 1 → last third", per_seed([f"{a:.2f}→{b:.2f}" for a, b in zip(first, last)])),
                ("at the start: accuracy of thinking vs direct samples",
                 per_seed([f"{t:.2f} vs {d:.2f}" for t, d in zip(think, direct)]))],
               charts=[dict(title="share of sampled responses that think", x_label="RL step", series=[
                   dict(label=f"seed {r['seed']}", pts=steps(r, "think_share")) for r in rs])])


def v_expert(runs, m):
    ei, none, dr, grpo = runs
    n, G, acc = len(runs[ei]), knob(runs[ei][0], "group_size"), seedmean(runs, final)
    ent, pg = ({k: [mean(d[key] for d in ds) for ds in m["final"][k]] for k in runs} for key in ("entropy", "passG"))
    better = sum(final(a) > final(b) + 0.02 for a, b in zip(runs[dr], runs[none]))
    diverse = sum(ent[dr][i] > max(ent[none][i], ent[ei][i]) and pg[dr][i] > max(pg[none][i], pg[ei][i])
                  for i in range(n))
    return out([(f"drgrpo above none + 0.02 on {better}/{n} seeds", better >= need(n)),
                (f"drgrpo's entropy and pass@{G} above both positives-only arms' on {diverse}/{n} seeds",
                 diverse >= need(n))],
               f"Held-out accuracy: expert iteration {acc[ei]:.2f}, positives only {acc[none]:.2f}, with negatives "
               f"{acc[dr]:.2f}, GRPO {acc[grpo]:.2f}; entropy at the end {mean(ent[ei]):.3f}, {mean(ent[none]):.3f}, "
               f"{mean(ent[dr]):.3f}, {mean(ent[grpo]):.3f}.",
               more=[(k, f"at the end: entropy {per_seed(ent[k])}, pass@{G} {per_seed(pg[k])}") for k in runs])


def v_sigma(runs, m):
    ss = m["per_seed"]
    ok = sum(s["grpo"] >= s["drgrpo"] + 0.05 for s in ss)
    return out([(f"GRPO's share >= Dr. GRPO's + 0.05 on every seed ({ok}/{len(ss)})", ok == len(ss)),
                (f"... on >= {need(len(ss))}/{len(ss)} seeds", ok >= need(len(ss)))],
               f"Groups with 1 or G-1 right answers carried {mean(s['grpo'] for s in ss):.2f} of GRPO's gradient and "
               f"{mean(s['drgrpo'] for s in ss):.2f} of Dr. GRPO's ({mean(s['edge_groups'] for s in ss):.2f} of the "
               "groups with signal).",
               [("share of the gradient from groups with 1 or G-1 right",
                 per_seed([f"GRPO {s['grpo']:.2f}, Dr. GRPO {s['drgrpo']:.2f}" for s in ss])),
                ("share of the groups with signal that have 1 or G-1 right", per_seed([s["edge_groups"] for s in ss]))],
               charts=[dots("share of the gradient from groups with 1 or G-1 right", {
                   k: [(i + 1, s[k]) for i, s in enumerate(ss)] for k in ("grpo", "drgrpo")}, "seed (in order)")])


def v_diversity(runs, m):
    b0, b1 = runs
    E = lambda when, n, key: mean(d[key] for ds in m[when][n] for d in ds)  # noqa: E731
    gap = lambda when: E(when, b0, "passG") - E(when, b0, "pass1")  # noqa: E731
    noise = max(abs(ds[0]["entropy"] - ds[1]["entropy"]) for n in runs for ds in m["final"][n])
    G, end = knob(runs[b0][0], "group_size"), steps(runs[b0][0], "acc")[-1][0]
    names = dict(entropy="entropy", pass1="pass@1", passG=f"pass@{G}")
    line = lambda key: [dict(label=f"{n}, {names[key]}", dash=key == "passG", pts=[  # noqa: E731
        (0, E("start", n, key)), (end, E("final", n, key))]) for n in runs]
    return out([(f"beta=0: entropy {E('start', b0, 'entropy'):.3f} → {E('final', b0, 'entropy'):.3f} (< half) and "
                 f"pass@{G} - pass@1 {gap('start'):.2f} → {gap('final'):.2f} (shrinks >= 0.1)",
                 E("final", b0, "entropy") < 0.5 * E("start", b0, "entropy") and gap("start") - gap("final") >= 0.1),
                (f"beta=1 ends at entropy {E('final', b1, 'entropy'):.3f}, above beta=0's + 2 x noise {noise:.4f}",
                 E("final", b1, "entropy") > E("final", b0, "entropy") + 2 * noise)],
               f"Without KL the entropy fell {E('start', b0, 'entropy'):.3f} → {E('final', b0, 'entropy'):.3f} and "
               f"pass@{G} - pass@1 {gap('start'):.2f} → {gap('final'):.2f}; with beta=1 the entropy ended at "
               f"{E('final', b1, 'entropy'):.3f}.",
               more=[(n, "; ".join(f"{names[k]} {E('start', n, k):.3f} → {E('final', n, k):.3f}" for k in names))
                     for n in runs],
               charts=[dict(title="entropy per token, start and end", x_label="RL step", series=line("entropy")),
                       dict(title=f"pass@1 and pass@{G} (dashed), start and end", x_label="RL step",
                            series=line("pass1") + line("passG"))])


def v_data(runs, m):
    p16, p128, full, filtered = runs
    acc = seedmean(runs, final)
    pts = {"held-out accuracy after RL": [(knob(runs[k][0], "rl_pool"), acc[k]) for k in (p16, p128, full)]}
    return out([(f"128 prompts {acc[p128]:.3f} within 0.03 of 2000's {acc[full]:.3f}",
                 abs(acc[p128] - acc[full]) <= 0.03),
                (f"16 prompts {acc[p16]:.3f} below 2000's by > 0.03", acc[p16] < acc[full] - 0.03),
                (f"filtered {acc[filtered]:.3f} >= unfiltered - 0.01", acc[filtered] >= acc[full] - 0.01)
                if runs[filtered] else ("the filtered pool not measured (train.py has no --filter_pool yet)", None)],
               f"Held-out accuracy after RL: {acc[p16]:.2f} from 16 prompts, {acc[p128]:.2f} from 128, {acc[full]:.2f} "
               "from 2000.", charts=[dots("held-out accuracy after RL (seed mean) vs pool size", pts,
                                          "prompts in the pool")])


def v_kl_gradient(runs, m):
    k1, k2, k3 = runs
    t, (kl, noise) = m["table"], kl_of(m["final"], runs)
    exact = max(t["k1"]["value"], t["k3"]["value"], t["k1"]["zero"], t["k2"]["forward"], t["k3"]["reverse"]) < 1e-9
    notes = ["Exact expectations over every token of 3 random 6-token categoricals (float64), the largest gaps:"]
    notes += table(
        ["estimator", "E[k] - KL(pi‖ref)", "E[∇k] - 0", "E[∇k] - ∇KL(pi‖ref)", "E[∇k] - ∇KL(ref‖pi)"],
        [(k, *(f"{t[k][c]:.1e}" for c in ("value", "zero", "forward", "reverse"))) for k in KL_KINDS])
    return out([("exact: k1 and k3 unbiased in value, k2 not; gradients 0, forward, reverse",
                 exact and t["k2"]["value"] > 1e-6),
                (f"runs: KL of k2 ({kl[k2]:.4f}) and k3 ({kl[k3]:.4f}) below k1's ({kl[k1]:.4f}) - 2 x noise "
                 f"{noise:.4f}",
                 max(kl[k2], kl[k3]) < kl[k1] - 2 * noise)],
               f"k1's value is unbiased but its gradient is 0: at beta=1 it ended {kl[k1]:.3f} from the start per "
               f"token, k2 {kl[k2]:.3f}, k3 {kl[k3]:.3f}.", more=kl_more(m["final"]), notes=notes,
               charts=[dots("KL to the start per token (x: k1, k2, k3)", {n: [(i + 1, d["kl_token"]) for ds in m[
                   "final"][n] for d in ds] for i, n in enumerate(runs)}, "estimator in the loss")])


def v_after_clip(runs, m):
    acc, names = seedmean(runs, final), list(runs)
    conds = [names[i:i + 3] for i in range(0, len(names), 3)]  # (clip, GSPO, CISPO) per condition
    pairs = [(c[0], x) for c in conds for x in c[1:]]
    return out([("GSPO and CISPO >= the clip - 0.02 in every condition",
                 all(acc[x] >= acc[c] - 0.02 for c, x in pairs)),
                ("one of them > the clip + 0.02 at least once", any(acc[x] > acc[c] + 0.02 for c, x in pairs))],
               "Held-out accuracy, clip / GSPO / CISPO: " + "; ".join(
                   f"{c[0].split(', ')[1]} {acc[c[0]]:.2f} / {acc[c[1]]:.2f} / {acc[c[2]]:.2f}" for c in conds) + ".")


def v_tool(runs, m):
    no, half, tenth = runs
    acc = seedmean(runs, final)
    first, last = seedmean(runs, head, "tool_rate", 5), seedmean(runs, tail, "tool_rate")
    return out([(f"accuracy {acc[half]:.3f} with the 50% teacher > {acc[no]:.3f} without + 0.02",
                 acc[half] > acc[no] + 0.02)] +
               [(f"{w} teacher: tool share {first[n]:.2f} → {last[n]:.2f} rises", last[n] > first[n])
                for w, n in (("50%", half), ("10%", tenth))],
               f"RL ended at {acc[half]:.2f} with the 50% teacher's calculator (calling it on {last[half]:.2f} of "
               f"responses), {acc[tenth]:.2f} with the 10% teacher's ({last[tenth]:.2f}), {acc[no]:.2f} without.")


# -------------------------------------------------------------------------------------------- helpers on models
OFF = torch.autocast("cpu", enabled=False)  # the helpers run on the CPU, in float32


def load_policy(ckpt):
    """A GPT from a checkpoint dict (checkpoint.load_checkpoint's), in eval mode, on the CPU."""
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.eval()


def start_of(argv):
    """What a run of argv (--init_from=<ckpt.pt>) starts from, built as train.py builds it (config.configure,
    train.make_task): its config, the loaded model, the held-out problems and RL's pool with their token ids."""
    cfg, ckpt = config.configure(list(argv))
    eval_set, eval_ids, pool, pool_ids = train.make_task(cfg, ckpt)
    return cfg, load_policy(ckpt), eval_set, eval_ids, pool, pool_ids


@torch.no_grad()
def draw_batch(model, run, pool, pool_ids, cfg):
    """One RL step's batch, drawn as train.py draws it (train.draw_prompts moves run's generators, so a fresh
    checkpoint.new_run gives a GRPO run's first batch): P prompts, G samples each, graded by the verifier. Returns
    the prompt indices (P,), the Samples (B rows), correct (B,) bool and the decoded texts."""
    idx, uniforms = train.draw_prompts(run, len(pool), cfg)
    samples = sample(model.eval(), [pool_ids[i] for i in idx], cfg.group_size, cfg.max_new_tokens, cfg.temperature,
                     EOS_ID, uniforms=uniforms, pad_id=PAD_ID)
    texts, grades = grade_samples(samples, [pool[i].answer for i in idx for _ in range(cfg.group_size)], cfg.check_form)
    return idx, samples, torch.tensor([g.correct for g in grades]), texts


def logprobs_of(model, samples, temperature):
    """log pi (B, T) of every sampled token of a batch, and each position's entropy (train.policy_logprobs)."""
    return train.policy_logprobs(model, samples, slice(None), samples.tokens.shape[1], temperature)


def batch_gradients(model, samples, cfg, advantages):
    """The policy gradient of one sampled batch under each advantage vector (name -> (B,)), flat (params,):
    train.grpo_update on-policy, unclipped, without KL, with an SGD step of size 0, so that .grad holds the gradient
    and the weights never move. None if a gradient is not finite."""
    still = torch.optim.SGD(model.parameters(), lr=0.0)
    cfg, grads = dataclasses.replace(cfg, grad_clip=0.0, kl_coef=0.0, updates_per_batch=1), {}
    for name, adv in advantages.items():
        if train.grpo_update(model, still, samples, adv, None, cfg, OFF) is None:
            return None
        grads[name] = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                                 for p in model.parameters()])  # (params,)
    return grads


@torch.no_grad()
def profile(model, ref, problems, prompt_ids, cfg, seed):
    """One draw of G samples (RL's temperature, its own seed) per prompt from model: pass@1, pass@G, the entropy per
    token of model's distributions along its samples, the think share, the accuracy of thinking and of direct
    samples; with ref, KL(model || ref) per token (k3, as train.py logs kl) and per response (the summed log-ratio)."""
    G = cfg.group_size
    s = sample(model.eval(), prompt_ids, G, cfg.max_new_tokens, cfg.temperature, EOS_ID, pad_id=PAD_ID,
               generator=torch.Generator().manual_seed(seed))
    texts, grades = grade_samples(s, [p.answer for p in problems for _ in range(G)], cfg.check_form)
    correct, think = torch.tensor([g.correct for g in grades]), torch.tensor([thinks(t) for t in texts])  # (B,) each
    logprobs, entropy = logprobs_of(model, s, cfg.temperature)  # (B, T) each
    mask, right = s.mask[:, 1:], correct.view(-1, G).sum(1).tolist()  # (B, T); right answers per prompt
    out = dict(entropy=float(masked_mean(entropy, mask)), pass1=mean(pass_at_k(G, c, 1) for c in right),
               passG=mean(pass_at_k(G, c, G) for c in right), think_share=think.float().mean().item(),
               acc_think=mean(correct[think].float().tolist()), acc_direct=mean(correct[~think].float().tolist()))
    if ref is not None:
        ref_logprobs = logprobs_of(ref.eval(), s, cfg.temperature)[0]  # (B, T)
        out.update(kl_token=float(masked_mean(kl_estimate(logprobs, ref_logprobs, "k3"), mask)),
                   kl_response=float(((logprobs - ref_logprobs) * mask).sum(1).mean()))
    return out


def cached(path, compute):
    """compute()'s JSON, kept at path: in a run's out_dir, so that redoing the run drops it."""
    if not os.path.exists(path):
        with open(path + ".tmp", "w") as f:
            json.dump(compute(), f)
        os.replace(path + ".tmp", path)
    with open(path) as f:
        return json.load(f)


def run_profile(run, prompts, which):
    """Two independent draws (seeds 0 and 1) of `profile` on a run's first `prompts` held-out problems, of its start
    policy or of its final one (against the start as ref)."""
    def compute():
        cfg, first, eval_set, eval_ids, _, _ = start_of(run["argv"])
        model = first if which == "start" else load_policy(checkpoint.load_checkpoint(f"{run['out_dir']}/ckpt.pt"))
        return [profile(model, None if which == "start" else first, eval_set[:prompts], eval_ids[:prompts], cfg, seed)
                for seed in (0, 1)]
    return cached(f"{run['out_dir']}/profile-{which}-{prompts}.json", compute)


def kl_table(vocab=6, pairs=3):
    """The KL estimators in expectation, exactly: every token of `pairs` random vocab-token categoricals pi, ref
    (float64, no sampling). Per estimator k, the largest gap between E_pi[k] and KL(pi || ref) ("value"), and between
    E_pi[grad k] (tokens fixed, as in the loss) and 0, grad KL(pi || ref), grad KL(ref || pi), w.r.t. pi's logits."""
    g, grad = torch.Generator().manual_seed(0), lambda y, x: torch.autograd.grad(y, x, retain_graph=True)[0]
    gaps = {k: dict(value=0.0, zero=0.0, forward=0.0, reverse=0.0) for k in KL_KINDS}
    for _ in range(pairs):
        z = torch.randn(vocab, generator=g, dtype=torch.float64).requires_grad_()  # (V,) pi's logits
        logp, logp_ref = F.log_softmax(z, 0), F.log_softmax(torch.randn(vocab, generator=g, dtype=torch.float64), 0)
        p, p_ref = logp.exp(), logp_ref.exp()  # (V,) each
        forward = (p * (logp - logp_ref)).sum()
        targets = dict(zero=torch.zeros(vocab, dtype=torch.float64), forward=grad(forward, z),
                       reverse=grad((p_ref * (logp_ref - logp)).sum(), z))
        for kind in KL_KINDS:
            k = kl_estimate(logp, logp_ref, kind)  # (V,)
            gaps[kind]["value"] = max(gaps[kind]["value"], abs(float(((p * k).sum() - forward).detach())))
            dk = grad((p.detach() * k).sum(), z)  # (V,) E_pi[grad k]
            for name, t in targets.items():
                gaps[kind][name] = max(gaps[kind][name], float((dk - t).abs().max()))
    return gaps


def measure_gradient_noise(runs, ctx):
    r, batches = next(iter(runs.values()))[0], MEASURE[ctx.size]["batches"]
    return cached(f"{r['out_dir']}/gradient-noise-{batches}.json", lambda: gradient_noise(r["argv"], batches))


def gradient_noise(argv, batches):
    """Claim 2: at a run's start, each advantage method's gradient on the same `batches` independent batches: tr
    Var[g] / |E g|^2 of one batch's gradient (|E g|^2 without its finite-sample bias; None when the mean is not
    resolved) and the cosine of its mean with RLOO's (whose baseline leaves the gradient unbiased)."""
    cfg, model, _, _, pool, pool_ids = start_of(argv)
    run, total, squares, used = checkpoint.new_run(cfg.seed, len(pool)), {}, {}, 0
    for _ in range(batches):
        _, samples, correct, _ = draw_batch(model, run, pool, pool_ids, cfg)
        grads = batch_gradients(model, samples, cfg, {k: group_advantages(correct.float(), cfg.group_size, k)
                                                      for k in METHODS})
        used += grads is not None
        for k, g in (grads or {}).items():
            total[k], squares[k] = total.get(k, 0) + g, squares.get(k, 0.0) + float(g @ g)
    result = dict(batches=used)
    for k in METHODS:
        if used < 2:
            result[k] = dict(noise_to_signal=None, cos_rloo=float("nan"))
            continue
        g_mean, rloo = total[k] / used, total["rloo"] / used  # (params,) each
        var = (squares[k] - used * float(g_mean @ g_mean)) / (used - 1)  # tr Var[g] of one batch
        signal = float(g_mean @ g_mean) - var / used  # |E g|^2, unbiased
        result[k] = dict(noise_to_signal=var / signal if signal > 0 else None,
                         cos_rloo=float(g_mean @ rloo) / (float(g_mean.norm() * rloo.norm()) or 1.0))
    return result


def measure_sigma_share(runs, ctx):
    batches = max(2, MEASURE[ctx.size]["batches"] // 2)
    return dict(per_seed=[dict(cached(f"{r['out_dir']}/sigma-share-{batches}.json", lambda: sigma_share(
        r["argv"], batches)), seed=r["seed"]) for r in runs[DEFAULT.name]])


def sigma_share(argv, batches):
    """Claim 13: at a run's start, on RL batches, the share of the gradient from the groups with 1 or G-1 right
    answers under grpo and drgrpo, g_edge . g / |g|^2 with g = g_edge + g_rest (the parts' shares add up to 1),
    averaged over batches; and the share of the groups with signal that those are."""
    cfg, model, _, _, pool, pool_ids = start_of(argv)
    run, G, shares, edges = checkpoint.new_run(cfg.seed, len(pool)), cfg.group_size, dict(grpo=[], drgrpo=[]), []
    for _ in range(batches):
        _, samples, correct, _ = draw_batch(model, run, pool, pool_ids, cfg)
        right = correct.view(-1, G).sum(1)  # (P,) right answers per group
        edge, signal = (right == 1) | (right == G - 1), (right > 0) & (right < G)  # (P,) each
        advs = {k: group_advantages(correct.float(), G, k) for k in shares}  # (B,) each
        advs.update({k + "/edge": a * edge.repeat_interleave(G) for k, a in advs.items()})
        grads = batch_gradients(model, samples, cfg, advs) if signal.any() else None
        if grads is not None:
            edges.append(edge.sum().item() / signal.sum().item())
            for k in shares:
                shares[k].append(float(grads[k + "/edge"] @ grads[k]) / float(grads[k] @ grads[k]))
    return dict(edge_groups=mean(edges), **{k: mean(v) for k, v in shares.items()})


def expert_iteration(argv):
    """Expert iteration with train.py's knobs (the module docstring says how it compares with RL): writes
    out_dir/metrics.jsonl of train.py's shape (rl records with acc, think_share, response_len, len_correct,
    len_wrong, the policy's entropy along its samples and the rows kept; rl_eval; a summary) and out_dir/ckpt.pt."""
    t0 = time.time()
    cfg, model, eval_set, eval_ids, pool, pool_ids = start_of(argv)
    torch.manual_seed(cfg.seed)
    run, G = checkpoint.new_run(cfg.seed, len(pool)), cfg.group_size  # GRPO's generators: the same first batch
    optimizer = train.make_optimizer(model, cfg.rl_lr, weight_decay=0.0)
    metrics = open(f"{cfg.out_dir}/metrics.jsonl", "a")
    log = lambda rec: print(json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
                                        for k, v in rec.items()}), file=metrics, flush=True)
    held_out = lambda: evaluate(model, eval_set, eval_ids, cfg.max_new_tokens, cfg.passk_problems, G,  # noqa: E731
                                cfg.temperature, cfg.seed + 5)
    before = ev = held_out()
    log(dict(stage="rl_eval", rl_step=0, **before))
    for step in range(1, cfg.rl_steps + 1):
        t1 = time.time()
        idx, samples, correct, texts = draw_batch(model, run, pool, pool_ids, cfg)
        with torch.no_grad():
            entropy = masked_mean(logprobs_of(model, samples, cfg.temperature)[1],
                                  samples.mask[:, 1:])
        keep, Lp, t2, loss = correct.nonzero()[:, 0].tolist(), samples.prompt_len, time.time(), float("nan")
        if keep:  # the kept responses as supervised rows: the prompt, then the sampled response with its EOS
            prompts = [pool_ids[idx[r // G]] for r in keep]
            x, y = supervised_pairs([(p + samples.tokens[r, Lp:Lp + int(samples.lengths[r])].tolist(), len(p))
                                     for p, r in zip(prompts, keep)])  # (K, T) each
            lr = cfg.rl_lr * min(1.0, step / 10)  # train.py's RL warmup
            loss = float(train.pretrain_step(model, optimizer, x, y, lr, cfg.grad_clip, OFF))
        lengths = samples.lengths.float()  # (B,)
        rec = dict(stage="rl", rl_step=step, acc=correct.float().mean().item(), think_share=mean(map(thinks, texts)),
                   response_len=lengths.mean().item(), len_correct=mean(lengths[correct].tolist()),
                   len_wrong=mean(lengths[~correct].tolist()), entropy=float(entropy), kept=len(keep), loss=loss,
                   sample_s=t2 - t1, train_s=time.time() - t2)
        log(rec)
        print(f"ei {step:4d} | acc {rec['acc']:.3f} kept {len(keep)} | loss {loss:.4f} | len {rec['response_len']:.1f} "
              f"| think {rec['think_share']:.2f} | ent {rec['entropy']:.3f} | {t2 - t1:.1f}s + {rec['train_s']:.1f}s")
        if step % cfg.rl_eval_interval == 0 or step == cfg.rl_steps:
            ev = held_out()
            log(dict(stage="rl_eval", rl_step=step, **ev))
    torch.save(dict(model=model.state_dict(), model_config=vars(model.config).copy(), config=vars(cfg).copy(),
                    optimizer=optimizer.state_dict(), stage="rl"), f"{cfg.out_dir}/ckpt.pt")
    log(dict(stage="summary", kind="expert_iteration", pretrain_acc=before["acc"], rl_acc=ev["acc"],
             think_share_before=before["think_share"], think_share_after=ev["think_share"],
             wall_s=round(time.time() - t0, 1), seed=cfg.seed))


# -------------------------------------------------------------------------------------------- the machinery
@dataclass
class Job:
    kind: str         # pretrain | rl | ei
    argv: list        # train.py flags, without --out_dir
    out_dir: str
    seed: int
    label: str
    needs: object = None  # the pretraining Job it starts from

    @property
    def key(self):
        return self.kind, tuple(self.argv)


def digest(argv):
    return hashlib.sha1(json.dumps(argv).encode()).hexdigest()[:8]


def train_knobs():
    """The flags train.py knows, read from `python train.py --help`."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300).stdout
    return set(re.findall(r"^\s+--(\w+)=", out, re.M))


def plan(claims, ctx):
    """The jobs, each once, pretraining first; and per claim and setting (setting, its jobs by seed, or why it
    cannot run)."""
    jobs, by_claim, quick = {}, {}, ctx.size == "quick"
    for claim in claims:
        n_steps = ctx.long if claim.long else claim.steps * ctx.steps // STEPS["full"] if claim.steps else ctx.steps
        every, by_claim[claim.id] = max(1, n_steps // claim.evals[quick]), {}
        fill = lambda a: a.format(half=n_steps // 2, passk=PASSK[ctx.size])  # noqa: E731
        flags = {st: (list(RECIPES[st.recipe].quick if quick else RECIPES[st.recipe].full), [fill(a) for a in st.argv])
                 for st in claim.settings}
        lacks = {st: {a[2:].split("=")[0] for a in sum(f, [])} - ctx.knobs for st, f in flags.items()}
        blocked = set().union(*(k for st, k in lacks.items() if not st.optional))  # the claim cannot be judged
        for st in claim.settings:
            (pre_flags, own), recipe, name, lacking = flags[st], RECIPES[st.recipe], fill(st.name), lacks[st] | blocked
            by_claim[claim.id][name] = (st, f"train.py has no {', '.join('--' + k for k in sorted(lacking))} yet"
                                        if lacking else [])
            for seed in [] if lacking else ctx.seeds[:claim.seeds]:
                pre_seed = ctx.seeds[0] if recipe.shared else seed
                argv = ["--preset=cpu", "--rl_steps=0", f"--seed={pre_seed}"] + pre_flags + ctx.extra
                pre = jobs.setdefault(("pretrain", tuple(argv)), Job("pretrain", argv, os.path.join(
                    ctx.work, f"pretrain-{st.recipe}-s{pre_seed}-{digest(argv)}"), pre_seed,
                    f"pretrain {st.recipe}, seed {pre_seed}"))
                argv = ["--preset=cpu", f"--init_from={pre.out_dir}/ckpt.pt", f"--seed={seed}", f"--rl_steps={n_steps}",
                        f"--rl_eval_interval={every}", *EVAL[ctx.size], *ctx.extra, *pre_flags, *own]
                slug = re.sub(r"[^A-Za-z0-9=.,_-]", "_", "-".join(a[2:] for a in own) or "default")[:50]
                by_claim[claim.id][name][1].append(jobs.setdefault((st.kind, tuple(argv)), Job(
                    st.kind, argv, os.path.join(ctx.work, f"{st.kind}-{st.recipe}-s{seed}-{slug}-{digest(argv)}"), seed,
                    f"claim {claim.id}: {name}, seed {seed}", pre)))
    return sorted(jobs.values(), key=lambda j: j.kind != "pretrain"), by_claim


def estimate_s(job):
    """Seconds on a 2-core CPU: a pretraining step ~0.15 s; an RL step of 128 rows ~0.25 s of sampling (twice with
    dynamic sampling) + ~0.35 s a pass over the batch (+30% with a KL reference; expert iteration ~0.15 s); an
    evaluation ~0.01 s a held-out problem + ~0.003 s a pass@k sample; ~3 s to start a process."""
    k = lambda key: knob(dict(argv=job.argv), key)  # noqa: E731
    eval_s = 0.3 + 0.01 * k("eval_problems") + 0.003 * k("passk_problems") * k("group_size")
    if job.kind == "pretrain":
        return 3 + 0.15 * k("pretrain_steps") + eval_s * (k("pretrain_steps") // k("eval_interval") + 1)
    train_s = 0.15 if job.kind == "ei" else 0.35 * k("updates_per_batch") * (1.3 if k("kl_coef") else 1)
    step_s = k("prompts_per_step") * k("group_size") / 128 * (0.25 * (1 + k("dynamic_sampling")) + train_s)
    return 3 + k("rl_steps") * step_s + (1 + math.ceil(k("rl_steps") / k("rl_eval_interval"))) * eval_s


def measure_s(claim, n_runs, ctx):
    """Seconds a claim's measurement takes, a guess: a gradient batch ~1.7 s (sampling, four backward passes); a
    profile (two draws of G samples of each held-out prompt, the log-probs, the start's too) ~3 s at 64 prompts."""
    if claim.measure in (measure_gradient_noise, measure_sigma_share):
        return 1.7 * MEASURE[ctx.size]["batches"] * (1 if claim.measure is measure_gradient_noise else claim.seeds / 2)
    return n_runs * (2 + 3 * MEASURE[ctx.size]["prompts"] / 64)


def run_job(job, ctx):
    """One job, unless its out_dir holds its finished run (argv.json, written after the run ended, holds its flags, and
    metrics.jsonl a summary): train.py in a subprocess (expert iteration in this process), its output in
    out_dir/log.txt. Returns the run: argv, out_dir, seed, records, error (None, or why it failed), wall_s, reused."""
    run = dict(argv=job.argv, out_dir=job.out_dir, seed=job.seed, records=[], error=None, wall_s=0.0, reused=False)
    done, metrics = os.path.join(job.out_dir, "argv.json"), os.path.join(job.out_dir, "metrics.jsonl")
    with contextlib.suppress(OSError, ValueError, KeyError):
        with open(done) as f, open(metrics) as g:
            saved = json.load(f)
            if not ctx.fresh and saved["argv"] == job.argv and any('"stage": "summary"' in line for line in g):
                run.update(reused=True, wall_s=saved["wall_s"])
    if not run["reused"]:
        shutil.rmtree(job.out_dir, ignore_errors=True)
        os.makedirs(job.out_dir)
        t0, log_path, argv = time.time(), os.path.join(job.out_dir, "log.txt"), job.argv + [f"--out_dir={job.out_dir}"]
        with open(log_path, "w") as log:
            if job.kind == "ei":
                with contextlib.redirect_stdout(log):
                    try:
                        expert_iteration(argv)
                    except (Exception, SystemExit) as e:  # a bug shows in the log with its traceback; the grid goes on
                        traceback.print_exc(file=log)
                        run["error"] = f"{type(e).__name__}: {e}"
            elif subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *argv], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT).returncode:
                run["error"] = "train.py failed"
        if run["error"]:  # the log's last line says why (train.py's "error: ..." message)
            run["error"] = ([line.strip() for line in open(log_path) if line.strip()] or [run["error"]])[-1]
        else:
            run["wall_s"] = time.time() - t0
            with open(done, "w") as f:
                json.dump(dict(argv=job.argv, wall_s=round(run["wall_s"], 1)), f)
    if run["error"] is None:
        with open(metrics) as f:
            run["records"] = [json.loads(line) for line in f]
    return run


def judge_claim(claim, planned, done, ctx):
    """A claim's outcome: not measured when a required setting lacks a train.py flag or a run failed; else its
    measurement (the helpers cache theirs in the runs' out_dirs) and its verdict, with the default rows."""
    lacking = {n: why for n, (st, why) in planned.items() if isinstance(why, str)}
    missing = [(n, f"not run: {why}") for n, why in lacking.items()]
    required = [why for n, why in lacking.items() if not planned[n][0].optional]
    runs = {n: None if n in lacking else [done[j.key] for j in jobs] for n, (_, jobs) in planned.items()}
    failed = [(n, f"failed (seed {r['seed']}): {r['error']} (log: {os.path.relpath(r['out_dir'])}/log.txt)")
              for n, rs in runs.items() for r in rs or [] if r["error"]]
    if required or failed:
        why = "; ".join(dict.fromkeys(required)) if required else f"{len(failed)} run(s) failed"
        return out([(why, None)], f"Not measured: {why}.", missing + failed, word="not measured", bucket="cannot")
    try:
        result = conclude(claim, runs, claim.measure({n: rs for n, rs in runs.items() if rs}, ctx) if claim.measure
                          else {})
    except Exception as e:  # the page still gets written, and says what broke
        traceback.print_exc()
        return out([(f"the analysis failed ({e!r})", None)], "Not measured: the analysis failed.", missing,
                   word="not measured", bucket="cannot")
    result["rows"] += missing
    return result


def conclude(claim, runs, measured):
    """claim.verdict on its runs and measurement, with the table's default rows (held-out accuracy and claim.cols per
    seed) unless the verdict gives its own, and the claim's charts before the verdict's."""
    present = {n: rs for n, rs in runs.items() if rs}
    result = claim.verdict(runs, measured)
    default = [(n, "; ".join([f"held-out acc {per_seed([f'{start(r):.2f}→{final(r):.2f}' for r in rs])}"] + [
        f"{k} {per_seed([f'{head(r, k):.2f}→{tail(r, k):.2f}' for r in rs])}" for k in claim.cols])) for n, rs in
        present.items()]
    rows = dict(result["rows"] or default)
    for n, text in result["more"]:  # added to the setting's row
        rows[n] = f"{rows[n]}; {text}" if n in rows else text
    result["rows"] = list(rows.items())
    result["charts"] = [chart(title, present, key) for title, key in claim.charts] + result["charts"]
    return result


def run_grid(claims, quick=False, steps=0, seeds=None, work="results/runs", results="results", extra=(), threads=0,
             fresh=False, plan_only=False, knobs=None, command="bench/claims.py"):
    """Plan, run, measure, judge; write results/claims.md, results/summary.md and one figure per claim. extra: flags
    for every run (the tests' tiny model), before each setting's own, which win. knobs: the flags train.py knows
    (default: from train.py --help). Returns [(claim, outcome)], or with plan_only the estimated seconds."""
    size = "quick" if quick else "full"
    steps = steps or STEPS[size]
    ctx = SimpleNamespace(size=size, steps=steps, long=LONG[size] * steps // STEPS[size], fresh=fresh,
                          seeds=list(seeds or SEEDS[:1 if quick else 3]), work=os.path.abspath(work), command=command,
                          extra=list(extra) + ([f"--threads={threads}"] if threads else []),
                          knobs=set(train_knobs() if knobs is None else knobs))
    jobs, by_claim = plan(claims, ctx)
    est = {j.key: estimate_s(j) for j in jobs}
    meas = sum(measure_s(c, sum(len(js) for _, js in by_claim[c.id].values() if not isinstance(js, str)), ctx)
               for c in claims if c.measure)
    print(f"plan ({size}): {sum(j.kind == 'pretrain' for j in jobs)} pretrainings and "
          f"{sum(j.kind != 'pretrain' for j in jobs)} runs for claims {','.join(str(c.id) for c in claims)}, seeds "
          f"{ctx.seeds}: about {(sum(est.values()) + meas) / 60:.0f} minutes on a 2-core CPU ({meas / 60:.1f} of "
          "them measuring)")
    for j in jobs:
        print(f"  {est[j.key]:6.0f} s  {j.label}  ->  {os.path.relpath(j.out_dir)}")
    for c in claims:
        print("".join(f"  not run: claim {c.id}, {n}: {why}\n" for n, (_, why) in by_claim[c.id].items()
                      if isinstance(why, str)), end="")
    if plan_only:
        return sum(est.values()) + meas
    os.makedirs(ctx.work, exist_ok=True)
    with open(os.path.join(ctx.work, ".gitignore"), "w") as f:
        f.write("*\n")  # checkpoints and logs stay out of git; results/*.md and *.svg do not
    if threads:
        torch.set_num_threads(threads)
    t_grid, done = time.time(), {}
    for i, job in enumerate(jobs):
        pre = done.get(job.needs.key) if job.needs else None
        done[job.key] = r = run_job(job, ctx) if not (pre and pre["error"]) else dict(
            argv=job.argv, out_dir=job.out_dir, seed=job.seed, records=[], wall_s=0.0, reused=False,
            error=f"its pretraining failed: {pre['error']}")
        state = "reused" if r["reused"] else f"FAILED: {r['error']}" if r["error"] else "done"
        print(f"[{i + 1}/{len(jobs)}] {job.label}: {state} in {r['wall_s']:.1f} s (estimated {est[job.key]:.0f} s); "
              f"{(time.time() - t_grid) / 60:.1f} min so far", flush=True)
    os.makedirs(results, exist_ok=True)
    outcomes = []
    for claim in claims:
        o = judge_claim(claim, by_claim[claim.id], done, ctx)
        o["bucket"] = o["bucket"] or claim.bucket
        if o["charts"]:
            o["figure"] = f"claim{claim.id:02d}.svg"
            figure(os.path.join(results, o["figure"]), f"{claim.id}. {claim.title}", o["charts"])
        outcomes.append((claim, o))
    write_pages(results, outcomes, ctx, time.time() - t_grid, [(j, done[j.key]) for j in jobs])
    return outcomes


# -------------------------------------------------------------------------------------------- the pages
SYMBOL = {"reproduced": "✓", "partly reproduced": "~", "not reproduced": "✗", "not measured": "–"}


def table(header, rows):
    """A markdown table with a blank line before and after it, so that it never runs into its neighbours."""
    cell = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return ["", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + [
        "| " + " | ".join(map(cell, row)) + " |" for row in rows] + [""]


def git_state():
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return f"commit {git('rev-parse', '--short', 'HEAD')}" + (" with local changes" if dirty else "")
    return "no git commit"


def write_pages(results, outcomes, ctx, wall_s, runs):
    """results/claims.md: the long table, each claim's prediction, threshold, verdict and figure, the runs.
    results/summary.md: one line per claim (its figure's two sentences), for the README, linked from the root."""
    origin = (f"`{ctx.command}` ({git_state()}, torch {torch.__version__}, {torch.get_num_threads()} threads) on "
              f"{time.strftime('%Y-%m-%d')}")
    md = ["# The lectures' claims, measured", "", f"Written by {origin} in {wall_s / 60:.1f} minutes: {ctx.steps} RL "
          f"steps a run (claim 12: {ctx.long}), seeds {', '.join(map(str, ctx.seeds))} (a claim of 1 seed uses the "
          "first). Each prediction and threshold was written in bench/claims.py before the runs; a claim of several "
          "parts is reproduced if all hold, partly if some do. Numbers are per seed, in that order; the runs are under "
          f"`{os.path.relpath(ctx.work)}/`, each with its metrics.jsonl and log.txt."]
    md += table(["#", "claim", "setting", "measured (per seed)", "verdict"], [
        (c.id, f"{c.title} ({min(c.seeds, len(ctx.seeds))} seed{'s' * (min(c.seeds, len(ctx.seeds)) > 1)})" if i == 0
         else "", s, v, o["verdict"] if i == 0 else "") for c, o in outcomes for i, (s, v) in enumerate(
            o["rows"] or [("–", "–")])])
    for c, o in outcomes:
        md += [f"## {c.id}. {c.title}", "", f"**Prediction.** {c.prediction}", "", f"**Threshold.** {c.threshold}", "",
               f"**Verdict.** {o['verdict']}.", ""] + ([f"![claim {c.id}]({o['figure']})", "", f"{c.look} "
                                                      f"{o['takeaway']}", ""] if "figure" in o else []) + o["notes"]
    md += ["## Runs"] + table(["run", "seconds", "out_dir"], [
        (j.label, f"failed: {r['error']}" if r["error"] else f"{r['wall_s']:.1f}" + " (reused)" * r["reused"],
         f"`{os.path.relpath(j.out_dir)}`") for j, r in runs])
    link = lambda name: os.path.relpath(os.path.join(results, name), ROOT)  # noqa: E731
    groups = [("Reproduced (✓) or partly (~)", lambda o: o["word"] in ("reproduced", "partly reproduced")),
              ("Not reproduced (✗): too weak at this scale", lambda o: o["word"] == "not reproduced" and o["bucket"]
               == "weak"), ("This experiment cannot show it yet (✗; –: not measured)", lambda o: o["word"] ==
                            "not measured" or o["word"] == "not reproduced" and o["bucket"] != "weak")]
    summary = [f"<!-- results/summary.md, written by {origin}: paste into README.md; links are from the repository "
               "root -->"]
    for title, belongs in groups:
        lines = [
            f"- {SYMBOL[o['word']]} **{c.id}. {c.title}.** {o['takeaway']}" + (
                f" [Figure]({link(o['figure'])}): {c.look[0].lower()}{c.look[1:]}" if "figure" in o else "")
            for c, o in outcomes if belongs(o)]
        summary += ["", f"**{title}**", ""] + (lines or ["- none"])
    summary += ["", f"Per-seed numbers, thresholds, long verdicts and the runs: [{link('claims.md')}]"
                    f"({link('claims.md')})."]
    for name, lines in (("claims.md", md), ("summary.md", summary)):
        with open(os.path.join(results, name), "w") as f:
            f.write("\n".join(lines) + "\n")
    print(f"wrote {results}/claims.md and {results}/summary.md")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    ap.add_argument("--quick", action="store_true", help="one seed, few steps: a smoke test (~10 min)")
    ap.add_argument("--only", default="", help="comma-separated claim numbers, e.g. 4,5 (default: all)")
    ap.add_argument("--seeds", default="", help=f"comma-separated seeds (default {','.join(map(str, SEEDS))}; "
                                                "--quick: the first); a claim of 1 seed uses the first")
    ap.add_argument("--steps", type=int, default=0, help=f"RL steps a run (default {STEPS['full']}, --quick "
                                                         f"{STEPS['quick']}); claim 12's scale with them")
    ap.add_argument("--work", default="results/runs", help="where the runs go, each in its own out_dir")
    ap.add_argument("--results", default="", help="where the pages and figures go (default results; --quick: "
                                                  "results/runs/quick, so that a smoke test never replaces them)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for every run (0: torch's default)")
    ap.add_argument("--fresh", action="store_true", help="redo runs whose out_dir holds them already")
    ap.add_argument("--plan", action="store_true", help="print the jobs and the estimated time, run nothing")
    a = ap.parse_args(argv)
    claims = the_claims()
    unknown = {int(x) for x in a.only.split(",") if x} - {c.id for c in claims}
    if unknown:
        sys.exit(f"error: --only names no claim {sorted(unknown)}; the claims are 1-{len(claims)}")
    try:
        run_grid([c for c in claims if not a.only or str(c.id) in a.only.split(",")], a.quick, a.steps,
                 [int(s) for s in a.seeds.split(",")] if a.seeds else None, a.work,
                 a.results or ("results/runs/quick" if a.quick else "results"), threads=a.threads, fresh=a.fresh,
                 plan_only=a.plan, command=" ".join(["python bench/claims.py"] + argv))
    except KeyboardInterrupt:
        sys.exit("stopped: rerun the same command to continue (finished runs are reused)")


if __name__ == "__main__":
    main(sys.argv[1:])
