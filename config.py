"""
config.py: the knobs of train.py, typed, with their help text; the two presets; and the checks that refuse a bad
configuration before any work. Plumbing, not a concept: read it next to train.py.

`python train.py --help` prints every field with its default; `--key=value` sets one (unknown keys and badly typed
values stop with a message). A preset fills in the fields the command line does not set; on resume, the saved
run's config does, and the command line's changes are named.
"""
import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field

import torch

from data.tasks import FAMILIES, TOOL_FAMILIES
from advantage import METHODS
from grpo import KL_KINDS, LOSS_AGGS, POLICY_LOSSES
from checkpoint import load_checkpoint


def knob(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # run
    out_dir: str = knob("out", "where checkpoints and metrics.jsonl go")
    init_from: str = knob("scratch", "scratch (pretrain first), resume (continue the run in out_dir, with its saved "
                          "config; the flags you give override it), or a checkpoint path (RL starts from its weights)")
    overwrite: bool = knob(False, "start afresh in an out_dir that holds another run's checkpoint or metrics")
    seed: int = knob(1337, "seed for the model init, the data and the sampler")
    device: str = knob("auto", "auto (cuda, then mps, then cpu), or a torch device string")
    threads: int = knob(0, "torch CPU threads (0: torch's default, one per core)")
    preset: str = knob("auto", "cpu or gpu defaults for the fields you do not set; auto: gpu on CUDA")
    # task and the imperfect teacher (data/tasks.py)
    families: str = knob("add,sub", f"comma-separated task families from {','.join(FAMILIES)}")
    digits: int = knob(2, "operand digits: the difficulty knob")
    think_prob: float = knob(0.5, "share of teacher demonstrations that show their work")
    error_prob: float = knob(0.3, "share of teacher demonstrations with one mistake")
    echo_prob: float = knob(0.0, "poly: share of the teacher's answers that restate the question, (x+3)(x-2), "
                            "instead of expanding it (a sloppy teacher: what the echo hack needs to start from)")
    check_lines: int = knob(0, "a verbose teacher: each worked solution ends with 0 to this many lines restating "
                            "its answer, right or wrong (free length, for Dr. GRPO's length bias)")
    tool_prob: float = knob(0.0, "mul, lin, poly: share of the teacher's worked solutions that call the calculator, "
                            "<<47*85=3995>> (tools.py); > 0 also lets the policy call it, in RL and in evaluation")
    thinking: str = knob("free", "free: the teacher shows its work on think_prob of problems, unasked | fusion "
                         "(Qwen3): each prompt ends in /think or /no_think (share think_prob /think in pretraining, "
                         "half in RL) and the teacher does as the flag says")
    mode_contract: bool = knob(True, "fusion: a response that breaks its prompt's flag (/no_think that thinks, "
                               "/think that does not) earns reward 0")
    max_new_tokens: int = knob(0, "longest response the model may write (0: fit the task, 1.2 x its longest "
                                  "demonstration rounded up to a multiple of 16)")
    # model
    n_layer: int = knob(4, "transformer blocks")
    n_head: int = knob(4, "attention heads")
    n_embd: int = knob(128, "channels")
    block_size: int = knob(0, "context length (0: fit the task, the longest prompt + max_new_tokens, or + the "
                              "longest demonstration if longer, rounded up to a multiple of 64)")
    # pretraining (supervised, on response tokens only)
    pretrain_steps: int = knob(700, "supervised steps (0: skip pretraining)")
    batch_size: int = knob(64, "sequences per pretraining step")
    lr: float = knob(3e-3, "peak pretraining learning rate (warmup, then cosine to lr/10)")
    warmup_steps: int = knob(50, "linear warmup steps")
    weight_decay: float = knob(0.1, "AdamW weight decay on matrices during pretraining")
    grad_clip: float = knob(1.0, "clip the gradient norm to this (0: off)")
    eval_interval: int = knob(700, "evaluate every this many pretraining steps")
    eval_problems: int = knob(200, "held-out problems per evaluation")
    # RL (GRPO against the verifier)
    rl_steps: int = knob(20, "GRPO steps (0: stop after pretraining)")
    prompts_per_step: int = knob(16, "P: distinct prompts per RL step")
    group_size: int = knob(8, "G: completions sampled per prompt")
    micro_batch: int = knob(16, "rows per forward/backward, in pretraining and RL: a batch is sorted by length and "
                            "cut into micro-batches, each trimmed to its longest row; their gradients add up to the "
                            "whole batch's")
    updates_per_batch: int = knob(1, "optimisation passes over each sampled batch (1: on-policy)")
    rl_lr: float = knob(1e-4, "RL learning rate (constant after a short warmup; no weight decay)")
    temperature: float = knob(1.0, "sampling temperature during RL")
    think_budget: int = knob(-1, "RL sampling: cut thinking after this many tokens with a forced </think><answer>, "
                             "which the loss skips (-1: never)")
    advantage: str = knob("grpo", " | ".join(METHODS) + " (advantage.py)")
    unbiased_std: bool = knob(False, "Bessel-corrected std in the grpo advantage")
    clip_eps: float = knob(0.2, "PPO clip range, lower side (and upper unless clip_eps_high is set)")
    clip_eps_high: float = knob(0.0, "DAPO clip-higher upper range (0: same as clip_eps)")
    policy_loss: str = knob("clip", " | ".join(POLICY_LOSSES) + ": PPO's token clip (GRPO), GSPO's sequence clip, or "
                            "CISPO's capped stop-gradient weight (grpo.policy_term)")
    gspo_eps: float = knob(4e-4, "GSPO's clip range on its sequence ratio (a mean of log-ratios: far narrower than a "
                           "token's)")
    staleness: int = knob(0, "sample with the policy's weights of this many optimizer steps before, as an async "
                          "trainer does; pi_old is the sampler's (0: on-policy)")
    kl_coef: float = knob(0.0, "beta: weight of the KL penalty to the frozen starting policy")
    kl_kind: str = knob("k3", " | ".join(KL_KINDS) + " KL estimator (grpo.py)")
    loss_agg: str = knob("seq-mean-token-mean", " | ".join(LOSS_AGGS))
    check_form: bool = knob(True, "poly: an answer must be in expanded form to be right (false: any equal expression "
                            "is, the echoed question included: the reward hack verify.py describes)")
    format_bonus: float = knob(0.0, "reward for a well-formatted response, even a wrong one (a known hack)")
    length_weight: float = knob(0.0, "weight of Kimi k1.5's group length reward")
    length_start: int = knob(0, "RL step from which the length reward is on")
    curriculum: bool = knob(False, "draw prompts with probability proportional to 1 - their running success rate")
    dynamic_sampling: bool = knob(False, "DAPO: draw 2P prompts, keep P groups, those with signal first")
    rl_pool: int = knob(2000, "training problems RL draws its prompts from")
    filter_pool: bool = knob(False, "before RL, drop from the pool the prompts the starting policy gets right in all "
                             "or none of G samples (Kimi, Qwen3: only prompts at the edge of its ability teach)")
    log_interval: int = knob(1, "print a metrics line every this many RL steps")
    sample_interval: int = knob(10, "print one prompt, completion and grade every this many RL steps")
    rl_eval_interval: int = knob(10, "held-out evaluation every this many RL steps")
    passk_problems: int = knob(64, "held-out problems for pass@k (G samples each)")
    save_interval: int = knob(100, "checkpoint every this many steps, in pretraining and in RL")
    max_bad_steps: int = knob(3, "stop after this many non-finite updates in a row")


PRESETS = {  # a preset fills in the fields the command line does not set
    "cpu": {},  # the defaults above: about 2.5 minutes on our 2-core CPU
    # Not measured yet (no GPU was available to us): a harder mix, 3-digit operands (mul responses reach 125
    # tokens), a 10.7M-parameter model; meant to take about 10 minutes on one GPU.
    "gpu": dict(families="add,sub,mul,lin", digits=3, n_layer=6, n_head=6, n_embd=384, pretrain_steps=3000,
                batch_size=128, lr=1e-3, warmup_steps=100, eval_interval=1000, eval_problems=500, rl_steps=200,
                prompts_per_step=32, micro_batch=128, rl_eval_interval=50, save_interval=250),
}


def parse_config(argv):
    """--key=value overrides on a typed config; unknown keys and badly typed values stop with a message."""
    kinds = {f.name: f for f in dataclasses.fields(Config)}
    if "-h" in argv or "--help" in argv:
        print("train.py: pretrain a small GPT on synthetic arithmetic, then improve it with GRPO\n\n"
              "usage: python train.py [--key=value ...]\n")
        for f in kinds.values():
            print(f"  --{f.name}={f.default!s:<10} ({f.type.__name__}) {f.metadata['help']}")
        print(f"\npresets (applied before your overrides): {PRESETS}")
        sys.exit(0)
    overrides = {}
    for arg in argv:
        key, eq, value = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or not eq:
            sys.exit(f"error: arguments look like --key=value, got {arg!r} (see --help)")
        if key not in kinds:
            close = [k for k in kinds if k.startswith(key[:3])]
            sys.exit(f"error: unknown config key {key!r}" + (f"; did you mean {close}?" if close else "") + " (--help)")
        kind = kinds[key].type
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                overrides[key] = value.lower() in ("true", "1")
            else:
                overrides[key] = kind(value)
        except ValueError:
            sys.exit(f"error: --{key} must be of type {kind.__name__}, got {value!r}")
    return overrides


def make_config(overrides, device_type, saved=None):
    """The config: the preset's values (or, on resume, the saved run's config), then the command line's. The
    preset "auto" is gpu on CUDA, else cpu."""
    preset = overrides.get("preset", saved["preset"] if saved else "auto")
    if preset == "auto":
        preset = "gpu" if device_type == "cuda" else "cpu"
    if preset not in PRESETS:
        sys.exit(f"error: unknown preset {preset!r}; choose from auto, {', '.join(PRESETS)}")
    known = {f.name for f in dataclasses.fields(Config)}
    base = {k: v for k, v in saved.items() if k in known} if saved else PRESETS[preset]
    cfg = Config(**{**base, **overrides})
    cfg.preset = preset
    return cfg


def at_least(low):
    return lambda v: v >= low, f">= {low}"


def one_of(choices):
    return lambda v: v in choices, f"one of {choices}"


SHARE, POSITIVE = (lambda v: 0 <= v <= 1, "in [0, 1]"), (lambda v: v > 0, "> 0")
RULES = {  # field: (test, what the value must be); every float must also be finite
    "threads": at_least(0), "digits": at_least(1), "think_prob": SHARE, "error_prob": SHARE, "echo_prob": SHARE, "tool_prob": SHARE, "check_lines": at_least(0),
    "thinking": one_of(("free", "fusion")), "think_budget": at_least(-1),
    "max_new_tokens": at_least(0), "n_layer": at_least(1), "n_head": at_least(1), "n_embd": at_least(1),
    "block_size": at_least(0), "pretrain_steps": at_least(0), "batch_size": at_least(1), "lr": POSITIVE,
    "warmup_steps": at_least(0), "weight_decay": at_least(0), "grad_clip": at_least(0),
    "eval_interval": at_least(1), "eval_problems": at_least(1), "rl_steps": at_least(0),
    "prompts_per_step": at_least(1), "group_size": at_least(1), "micro_batch": at_least(1),
    "updates_per_batch": at_least(1), "rl_lr": POSITIVE, "temperature": POSITIVE, "advantage": one_of(METHODS),
    "clip_eps": (lambda v: 0 < v < 1, "in (0, 1)"), "clip_eps_high": at_least(0), "kl_coef": at_least(0),
    "kl_kind": one_of(KL_KINDS), "loss_agg": one_of(LOSS_AGGS), "format_bonus": at_least(0),
    "policy_loss": one_of(POLICY_LOSSES), "gspo_eps": (lambda v: 0 < v < 1, "in (0, 1)"), "staleness": at_least(0),
    "length_weight": at_least(0), "length_start": at_least(0), "rl_pool": at_least(1),
    "log_interval": at_least(1), "sample_interval": at_least(1), "rl_eval_interval": at_least(1),
    "passk_problems": at_least(0), "save_interval": at_least(1), "max_bad_steps": at_least(1),
}


def validate(cfg, world=1):
    """Refuse a bad configuration before any work: one rule per field, then the rules between fields (world: the
    torchrun processes, which split each step's prompts and each pretraining batch). Each message names the field;
    all of them are printed at once."""
    errors = []
    for name, (test, must) in RULES.items():
        value = getattr(cfg, name)
        if (isinstance(value, float) and not math.isfinite(value)) or not test(value):
            errors.append(f"--{name}={value!r} must be {must}")
    families = cfg.families.split(",")
    if any(f not in FAMILIES for f in families) or len(set(families)) != len(families):
        errors.append(f"--families={cfg.families!r} must be distinct names from {','.join(FAMILIES)}")
    if cfg.echo_prob > 0 and "poly" not in families:
        errors.append(f"--echo_prob={cfg.echo_prob} applies to the poly family only, and --families={cfg.families!r}")
    if cfg.tool_prob > 0 and not set(families) & set(TOOL_FAMILIES):
        errors.append(f"--tool_prob={cfg.tool_prob}: the teacher calls the calculator in {', '.join(TOOL_FAMILIES)} "
                      f"only, and --families={cfg.families!r}")
    if cfg.n_head >= 1 and cfg.n_embd % cfg.n_head:
        errors.append(f"--n_embd={cfg.n_embd} must be a multiple of --n_head={cfg.n_head}")
    if cfg.advantage != "none" and cfg.group_size < 2:
        errors.append(f"--advantage={cfg.advantage} compares completions within a group: --group_size must be "
                      f">= 2, got {cfg.group_size}")
    for name in ("prompts_per_step", "batch_size"):
        if getattr(cfg, name) % world:
            errors.append(f"--{name}={getattr(cfg, name)} must divide by the {world} processes")
    rows = cfg.prompts_per_step // world * cfg.group_size  # this process's rows of a step
    if 1 <= cfg.micro_batch < rows and rows % cfg.micro_batch:
        errors.append(f"--micro_batch={cfg.micro_batch} does not divide the batch --prompts_per_step x "
                      f"--group_size = {rows}" + (f" of each of the {world} processes" if world > 1 else ""))
    if cfg.passk_problems > cfg.eval_problems:
        errors.append(f"--passk_problems={cfg.passk_problems} must be <= --eval_problems={cfg.eval_problems}")
    if os.path.exists(cfg.out_dir) and not os.path.isdir(cfg.out_dir):
        errors.append(f"--out_dir={cfg.out_dir!r} is a file, not a folder")
    if cfg.init_from not in ("scratch", "resume") and not os.path.isfile(cfg.init_from):
        errors.append(f"--init_from={cfg.init_from!r} is neither scratch, resume nor a checkpoint file")
    elif cfg.overwrite and os.path.abspath(cfg.init_from) == os.path.abspath(os.path.join(cfg.out_dir, "ckpt.pt")):
        errors.append("--overwrite would delete --init_from, this out_dir's own checkpoint: use --init_from=resume "
                      "or another --out_dir")
    if errors:
        sys.exit("error: " + "\nerror: ".join(errors))


TASK_FIELDS = ("seed", "families", "digits", "rl_pool", "thinking")  # they make the problems a run's state refers to


def configure(argv):
    """The config for a run, and the checkpoint it starts from (None: from scratch). On resume the saved run's
    config is the base and the command line's changes are printed; a flag that would change the problems or the
    loaded model's shape is refused."""
    overrides = parse_config(argv)
    resume = overrides.get("init_from") == "resume"
    out_dir = overrides.get("out_dir", Config.out_dir)
    ckpt = load_checkpoint(os.path.join(out_dir, "ckpt.pt")) if resume else None
    saved = ckpt["config"] if resume else None
    device = overrides.get("device", saved["device"] if saved else "auto")  # ddp.setup checks it
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    cfg = make_config(overrides, "cuda" if on_cuda else "cpu", saved)
    cfg.out_dir = out_dir  # a resumed run goes on where its checkpoint is, wherever it was started
    validate(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    if resume:
        changed = {k: v for k, v in overrides.items() if k not in ("init_from", "out_dir") and saved.get(k) != v}
        fixed = [f"--{k}" for k in changed if k in TASK_FIELDS]
        if fixed:
            sys.exit(f"error: {' '.join(fixed)} cannot change on resume: the run's state refers to its problems")
        print("resuming with the saved config" + "".join(f", --{k}={v} (was {saved.get(k)})" for k, v in
                                                         changed.items()))
    elif cfg.init_from != "scratch":
        ckpt = load_checkpoint(cfg.init_from)
    if ckpt is not None:  # the model's shape is the checkpoint's; a flag that would change it cannot apply
        mc = ckpt["model_config"]
        bad = [f"--{k}={overrides[k]} (the model has {mc[k]})" for k in ("n_layer", "n_head", "n_embd")
               if k in overrides and overrides[k] != mc[k]]
        if bad:
            sys.exit("error: cannot apply to the loaded model: " + ", ".join(bad))
        cfg.n_layer, cfg.n_head, cfg.n_embd = mc["n_layer"], mc["n_head"], mc["n_embd"]
    return cfg, ckpt
