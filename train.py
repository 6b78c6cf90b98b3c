"""
train.py: pretrain a small GPT on synthetic arithmetic, then improve it with GRPO against an exact verifier.

The story: the pretraining corpus comes from an imperfect teacher (data/tasks.py) who is wrong on error_prob of
the problems and shows its work on only think_prob of them. Imitation cannot beat that: the pretrained model
answers mostly directly, and mostly wrongly. RL then samples G completions per prompt, rewards only the
verifier's "correct" (verify.py), and pushes up whatever earned more than its group's mean (advantage.py,
grpo.py). Worked solutions earn more than direct guesses, so the share of responses that think rises by itself,
with nothing rewarding it directly: R1-Zero in miniature.

The outline: config -> setup -> pretrain -> RL loop (sample -> verify -> advantage -> loss -> step -> log) ->
eval -> save. The RL objective per token, for completion i of a group and advantage A_i:
    loss = -min(rho A_i, clip(rho, 1 - eps, 1 + eps_high) A_i) + beta KL(pi || pi_ref),  rho = pi / pi_old.
How this departs from DeepSeekMath's GRPO:
 1. pi_old is the sampler's own log-probs (sample.py), not a separate forward pass; with one update per batch
    (updates_per_batch=1, the default) rho = 1 and the loss is REINFORCE with the group-mean baseline.
 2. No KL by default (kl_coef=0, like many recent recipes); with kl_coef > 0 the reference is the policy RL
    starts from, kept frozen.
 3. The reward is the verifier's alone (no format reward unless format_bonus > 0); truncated responses earn 0.
 4. RL draws its prompts from a fixed pool of rl_pool training problems (Qwen3 used ~4k), optionally with a
    curriculum or DAPO-style dynamic sampling.

Run: `python train.py` (about 5 minutes on a 2-core CPU; the gpu preset on CUDA), `python train.py --help` for
every knob, `python train.py --key=value` to change one, `--init_from=resume` to continue a run in out_dir.
Shapes: P prompts per step, G group size, B = P·G rows, T sequence length, C channels, V vocab.
"""
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from model import GPT, GPTConfig
from sample import sample
from data.tokenizer import get_tokenizer, encode, decode, EOS, PAD, VOCAB_SIZE
from data.tasks import FAMILIES, generate_problems, demonstration
from verify import grade
from advantage import group_advantages, length_rewards, group_stats
from grpo import token_logprobs, grpo_loss, masked_mean, LOSS_AGGS

T_START = time.time()
ADVANTAGES = ("grpo", "drgrpo", "rloo", "none")
RL_LINE = ("rl {rl_step:4d} | reward {reward:.3f} acc {accuracy:.3f} fmt {format_rate:.2f} | zero-signal "
           "{zero_signal:.2f} (pred {zero_signal_pred:.2f}) | len {response_len:.1f} (ok {len_correct:.1f} / bad "
           "{len_wrong:.1f}) | think {think_share:.2f} trunc {truncated:.2f} | kl {kl:.4f} clip {clip_frac:.3f} ent "
           "{entropy:.3f} gnorm {grad_norm:.2f} dlp {lp_diff:.1e} | {sample_s:.1f}s + {train_s:.1f}s")  # one per step


def knob(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # run
    out_dir: str = knob("out", "where checkpoints and metrics.jsonl go")
    init_from: str = knob("scratch", "scratch (pretrain first), resume (continue the run in out_dir), or a .pt path")
    seed: int = knob(1337, "seed for the model init, the data and the sampler")
    device: str = knob("auto", "auto (cuda, then mps, then cpu), or a torch device string")
    preset: str = knob("auto", "cpu or gpu defaults for the fields you do not set; auto: gpu on CUDA")
    # task and the imperfect teacher (data/tasks.py)
    families: str = knob("add,sub", f"comma-separated task families from {','.join(FAMILIES)}")
    digits: int = knob(2, "operand digits: the difficulty knob")
    think_prob: float = knob(0.5, "share of teacher demonstrations that show their work")
    error_prob: float = knob(0.3, "share of teacher demonstrations with one mistake")
    max_new_tokens: int = knob(80, "longest response the model may write")
    # model
    n_layer: int = knob(4, "transformer blocks")
    n_head: int = knob(4, "attention heads")
    n_embd: int = knob(128, "channels")
    block_size: int = knob(128, "context length")
    # pretraining (supervised, on response tokens only)
    pretrain_steps: int = knob(700, "supervised steps (0: skip pretraining)")
    batch_size: int = knob(64, "sequences per pretraining step")
    lr: float = knob(3e-3, "peak pretraining learning rate (warmup, then cosine to lr/10)")
    warmup_steps: int = knob(50, "linear warmup steps")
    weight_decay: float = knob(0.1, "AdamW weight decay on matrices")
    grad_clip: float = knob(1.0, "clip the gradient norm to this (0: off)")
    eval_interval: int = knob(350, "evaluate every this many steps")
    eval_problems: int = knob(200, "held-out problems per evaluation")
    # RL (GRPO against the verifier)
    rl_steps: int = knob(100, "GRPO steps (0: stop after pretraining)")
    prompts_per_step: int = knob(16, "P: distinct prompts per RL step")
    group_size: int = knob(8, "G: completions sampled per prompt")
    micro_batch: int = knob(64, "rows per forward/backward (gradients are accumulated to the full batch)")
    updates_per_batch: int = knob(1, "mu: optimisation passes over each sampled batch (1: on-policy)")
    rl_lr: float = knob(1e-4, "RL learning rate (constant after a short warmup)")
    temperature: float = knob(1.0, "sampling temperature during RL")
    advantage: str = knob("grpo", "grpo | drgrpo | rloo | none (advantage.py)")
    unbiased_std: bool = knob(False, "Bessel-corrected std in the grpo advantage")
    clip_eps: float = knob(0.2, "PPO clip range, lower side (and upper unless clip_eps_high is set)")
    clip_eps_high: float = knob(0.0, "DAPO clip-higher upper range (0: same as clip_eps)")
    kl_coef: float = knob(0.0, "beta: weight of the KL penalty to the frozen starting policy")
    kl_kind: str = knob("k3", "k1 | k2 | k3 KL estimator (grpo.py)")
    loss_agg: str = knob("seq-mean-token-mean", "seq-mean-token-mean | token-mean | seq-sum-constant")
    format_bonus: float = knob(0.0, "reward for a well-formatted response, even a wrong one (a known hack)")
    length_weight: float = knob(0.0, "weight of Kimi k1.5's group length reward")
    length_start: int = knob(0, "RL step from which the length reward is on")
    curriculum: bool = knob(False, "draw prompts with probability proportional to 1 - their running success rate")
    dynamic_sampling: bool = knob(False, "DAPO: drop groups whose rewards are all equal and draw more")
    rl_pool: int = knob(2000, "training problems RL draws its prompts from")
    log_interval: int = knob(1, "print a metrics line every this many RL steps")
    sample_interval: int = knob(25, "print one prompt, completion and grade every this many RL steps")
    rl_eval_interval: int = knob(50, "held-out evaluation every this many RL steps")
    passk_problems: int = knob(64, "held-out problems for pass@k (G samples each)")
    save_interval: int = knob(25, "checkpoint every this many RL steps")
    max_bad_steps: int = knob(3, "stop after this many non-finite updates in a row")


PRESETS = {  # a preset fills in the fields the command line does not set
    "cpu": {},  # the defaults above: about 5 minutes on 2 CPU cores
    # Not measured yet (no GPU was available to us): a harder mix, 3-digit operands (mul responses reach 125
    # tokens), a 10.7M-parameter model; meant to take about 10 minutes on one GPU.
    "gpu": dict(families="add,sub,mul,lin", digits=3, max_new_tokens=160, block_size=192, n_layer=6, n_head=6,
                n_embd=384, pretrain_steps=3000, batch_size=128, lr=1e-3, warmup_steps=100, eval_interval=1000,
                eval_problems=500, rl_steps=200, prompts_per_step=32, micro_batch=128),
}


def parse_config(argv):
    """--key=value overrides on a typed config; unknown keys and badly typed values stop with a message."""
    kinds = {f.name: f for f in dataclasses.fields(Config)}
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip().splitlines()[0], "\n\nusage: python train.py [--key=value ...]\n")
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


def make_config(overrides, device_type):
    preset = overrides.get("preset", "auto")
    if preset == "auto":
        preset = "gpu" if device_type == "cuda" else "cpu"
    if preset not in PRESETS:
        sys.exit(f"error: unknown preset {preset!r}; choose from auto, {', '.join(PRESETS)}")
    cfg = Config(**{**PRESETS[preset], **overrides})
    cfg.preset = preset
    families = cfg.families.split(",")
    bad = [f for f in families if f not in FAMILIES]
    if bad:
        sys.exit(f"error: --families has unknown {bad}; choose from {','.join(FAMILIES)}")
    return cfg


def pick_device(name):
    if name != "auto":
        return torch.device(name), f"--device={name}"
    if torch.cuda.is_available():
        return torch.device("cuda"), "CUDA is available"
    if torch.backends.mps.is_available():
        return torch.device("mps"), "Apple MPS is available"
    return torch.device("cpu"), "no GPU found"


def pretrain_batch(problems, rng, enc, think_prob, error_prob):
    """The teacher's demonstrations of `problems` as next-token pairs x, y (B, T). Cross-entropy is taken on the
    response and its EOS only: y is -1 on the prompt and the padding."""
    pad_id = enc.encode_single_token(PAD)
    rows = []
    for p in problems:
        prompt = encode(enc, p.prompt)
        rows.append((prompt + encode(enc, demonstration(p, rng, think_prob, error_prob)[0] + EOS), len(prompt)))
    T = max(len(ids) for ids, _ in rows) - 1
    x = torch.full((len(rows), T), pad_id, dtype=torch.long)  # (B, T)
    y = torch.full((len(rows), T), -1, dtype=torch.long)  # (B, T)
    for i, (ids, n_prompt) in enumerate(rows):
        x[i, :len(ids) - 1] = torch.tensor(ids[:-1])
        y[i, n_prompt - 1:len(ids) - 1] = torch.tensor(ids[n_prompt:])
    return x, y


def check_config(cfg, longest_prompt):
    """Refuse invalid combinations before any work, naming the fields."""
    errors = []
    if cfg.advantage not in ADVANTAGES:
        errors.append(f"--advantage={cfg.advantage!r} is not one of {ADVANTAGES}")
    if cfg.advantage in ("grpo", "drgrpo", "rloo") and cfg.group_size < 2:
        errors.append(f"--advantage={cfg.advantage} compares completions within a group: --group_size must be "
                      f">= 2, got {cfg.group_size}")
    if cfg.kl_kind not in ("k1", "k2", "k3"):
        errors.append(f"--kl_kind={cfg.kl_kind!r} is not one of k1, k2, k3")
    if cfg.loss_agg not in LOSS_AGGS:
        errors.append(f"--loss_agg={cfg.loss_agg!r} is not one of {LOSS_AGGS}")
    if cfg.prompts_per_step * cfg.group_size % cfg.micro_batch:
        errors.append(f"--micro_batch={cfg.micro_batch} does not divide the batch --prompts_per_step x "
                      f"--group_size = {cfg.prompts_per_step * cfg.group_size}")
    if longest_prompt + cfg.max_new_tokens > cfg.block_size:
        errors.append(f"the longest prompt ({longest_prompt} tokens) + --max_new_tokens={cfg.max_new_tokens} "
                      f"exceeds --block_size={cfg.block_size}")
    for name in ("updates_per_batch", "prompts_per_step", "group_size", "micro_batch", "batch_size"):
        if getattr(cfg, name) < 1:
            errors.append(f"--{name} must be >= 1")
    if errors:
        sys.exit("error: " + "\nerror: ".join(errors))


def thinks(text):
    """Does a response show its work (a non-empty think block)?"""
    return text.startswith("<think>") and text.split("</think>")[0][len("<think>"):].strip() != ""


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def grpo_update(model, optimizer, s, advantages, cfg, autocast, ref_model=None):
    """cfg.updates_per_batch AdamW steps on one sampled batch s (sample.Samples) with advantages (B,).
    Micro-batches accumulate exactly the full-batch gradient (grpo_loss gets the full batch's row and token
    counts). The sampler's log-probs are pi_old. Returns (diagnostics of the first pass, last grad norm), or
    (None, grad norm) when a loss or gradient is not finite: that update is skipped, the weights untouched."""
    x, targets, pos, keys = s.tokens[:, :-1], s.tokens[:, 1:], s.positions()[:, :-1], s.valid[:, :-1]  # (B, T)
    mask, old_logprobs = s.mask[:, 1:], s.logprobs[:, 1:]  # (B, T)
    B, n_tokens = mask.size(0), mask.sum()
    micro = [slice(i, i + cfg.micro_batch) for i in range(0, B, cfg.micro_batch)]
    weight = model.lm_head.weight
    ref_logprobs = None
    if ref_model is not None:
        with torch.no_grad(), autocast:
            ref_logprobs = torch.cat([token_logprobs(ref_model(x[m], pos=pos[m], mask=keys[m], return_hidden=True),
                                                     ref_model.lm_head.weight, targets[m], cfg.temperature)
                                      for m in micro])  # (B, T)
    agg = dict(loss=0.0, clip_frac=0.0, kl=0.0, ratio_max=0.0, entropy=0.0, lp_diff=0.0)
    for epoch in range(cfg.updates_per_batch):
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for m in micro:
            with autocast:
                hidden = model(x[m], pos=pos[m], mask=keys[m], return_hidden=True)  # (b, T, C)
                logprobs, entropy = token_logprobs(hidden, weight, targets[m], cfg.temperature,
                                                   return_entropy=True)  # (b, T) each
            loss, st = grpo_loss(logprobs, old_logprobs[m], advantages[m], mask[m],
                                 None if ref_logprobs is None else ref_logprobs[m], clip_eps=cfg.clip_eps,
                                 clip_eps_high=cfg.clip_eps_high or None, kl_coef=cfg.kl_coef, kl_kind=cfg.kl_kind,
                                 loss_agg=cfg.loss_agg, max_len=cfg.max_new_tokens, num_rows=B, num_tokens=n_tokens)
            loss.backward()
            total += loss.item()
            if epoch == 0:  # on-policy diagnostics, token-weighted over the micro-batches
                w = (mask[m].sum() / n_tokens).item()
                agg["clip_frac"] += w * float(st["clip_frac"])
                agg["kl"] += w * float(st["kl"])
                agg["ratio_max"] = max(agg["ratio_max"], float(st["ratio_max"]))
                agg["entropy"] += w * float(masked_mean(entropy, mask[m]))
                diff = (logprobs.detach() - old_logprobs[m]).abs() * mask[m]  # (b, T)
                agg["lp_diff"] = max(agg["lp_diff"], float(diff.max()))
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf")))
        if not (math.isfinite(grad_norm) and math.isfinite(total)):
            optimizer.zero_grad(set_to_none=True)
            return None, grad_norm
        agg["loss"] = total if epoch == 0 else agg["loss"]
        optimizer.step()
    return agg, grad_norm


def save_checkpoint(path, **state):
    """Atomic: write a temp file then rename, so a crash mid-save never destroys the previous checkpoint."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------------- setup
if __name__ == "__main__":
    overrides = parse_config(sys.argv[1:])
    device, why = pick_device(overrides.get("device", "auto"))
    cfg = make_config(overrides, device.type)
    enc = get_tokenizer()
    eos_id, pad_id = enc.encode_single_token(EOS), enc.encode_single_token(PAD)
    families = tuple(cfg.families.split(","))
    eval_set = generate_problems(cfg.eval_problems, seed=cfg.seed + 1, split="test", families=families,
                                 digits=cfg.digits)
    pool = generate_problems(cfg.rl_pool, seed=cfg.seed + 2, families=families, digits=cfg.digits)  # RL prompts
    eval_ids, pool_ids = ([encode(enc, p.prompt) for p in problems] for problems in (eval_set, pool))
    check_config(cfg, max(map(len, eval_ids + pool_ids)))
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    dtype_why = "bf16 autocast (the GPU supports it)" if use_bf16 else f"fp32 (no bf16 autocast on {device.type})"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    print(f"device {device} ({why}), {dtype_why}, preset {cfg.preset}")
    os.makedirs(cfg.out_dir, exist_ok=True)
    ckpt_path = os.path.join(cfg.out_dir, "ckpt.pt")
    torch.manual_seed(cfg.seed)
    data_rng = random.Random(cfg.seed)
    sample_gen = torch.Generator().manual_seed(cfg.seed + 3)
    # The imitation ceiling: how often the teacher itself is right (measured, not assumed).
    corpus_rng = random.Random(cfg.seed + 4)
    corpus_acc = sum(demonstration(p, corpus_rng, cfg.think_prob, cfg.error_prob)[1] for p in pool) / len(pool)
    print(f"pretraining corpus: {cfg.families} with {cfg.digits} digits, think_prob {cfg.think_prob}, error_prob "
          f"{cfg.error_prob}: the teacher is right on {corpus_acc:.1%} of problems (the imitation ceiling)")

    step, rl_step, stage, resume = 0, 0, "pretrain", None
    if cfg.init_from == "scratch":
        model = GPT(GPTConfig(vocab_size=VOCAB_SIZE, block_size=cfg.block_size, n_layer=cfg.n_layer,
                              n_head=cfg.n_head, n_embd=cfg.n_embd))
    else:
        path = ckpt_path if cfg.init_from == "resume" else cfg.init_from
        if not os.path.exists(path):
            sys.exit(f"error: --init_from={cfg.init_from}: no checkpoint at {path}")
        resume = torch.load(path, map_location="cpu", weights_only=False)
        model = GPT(GPTConfig(**resume["model_config"]))
        model.load_state_dict(resume["model"])
        step, rl_step = resume["step"], resume.get("rl_step", 0)
        # resume continues the run where it stopped; a checkpoint from another run starts a new RL stage from it
        stage = resume["stage"] if cfg.init_from == "resume" else "rl"
        print(f"loaded {path}: stage {resume['stage']}, pretrain step {step}, RL step {rl_step}")
    resume_rl = cfg.init_from == "resume" and stage == "rl"  # continue an RL stage where it stopped
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [dict(params=[p for p in params if p.dim() >= 2], weight_decay=cfg.weight_decay),
              dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0)]
    print(f"model: {model.num_params() / 1e6:.2f}M parameters, {model.config.n_layer} layers, "
          f"{model.config.n_embd} channels")
    metrics_file = open(os.path.join(cfg.out_dir, "metrics.jsonl"), "a")

    def log(record):
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()

    def judge(s, answers):
        """A Samples batch's responses decoded (without the EOS the verifier must not see) and graded against
        answers (one per row). correct (B,), on the CPU: the right answer *and* an EOS; truncated never counts."""
        rows = s.tokens[:, s.prompt_len:].tolist()
        texts = [decode(enc, row[:n - fin]) for row, n, fin in zip(rows, s.lengths.tolist(), s.finished.tolist())]
        grades = [grade(t, a) for t, a in zip(texts, answers)]
        return texts, grades, torch.tensor([g.correct for g in grades]) & s.finished.cpu()

    def evaluate(passk_problems=0):
        """On the held-out set: greedy accuracy per family, think share and response length; pass@1 / pass@G
        from G samples of the first passk_problems."""
        model.eval()
        correct, think, lengths = {f: [] for f in families}, [], []
        for i in range(0, len(eval_set), 256):
            chunk = eval_set[i:i + 256]
            s = sample(model, eval_ids[i:i + 256], 1, cfg.max_new_tokens, temperature=0, eos_id=eos_id,
                       pad_id=pad_id)
            texts, _, ok = judge(s, [p.answer for p in chunk])
            for p, text, c, n in zip(chunk, texts, ok.tolist(), s.lengths.tolist()):
                correct[p.family].append(c)
                think.append(thinks(text))
                lengths.append(n)
        out = dict(acc=sum(map(sum, correct.values())) / len(eval_set),
                   **{f"acc_{f}": sum(v) / max(len(v), 1) for f, v in correct.items()},
                   think_share=sum(think) / len(think), response_len=sum(lengths) / len(lengths))
        if passk_problems:
            chunk = eval_set[:passk_problems]
            s = sample(model, eval_ids[:passk_problems], G, cfg.max_new_tokens,
                       temperature=cfg.temperature, eos_id=eos_id, pad_id=pad_id,
                       generator=torch.Generator().manual_seed(cfg.seed + 5))
            c = judge(s, [p.answer for p in chunk for _ in range(G)])[2].view(-1, G).sum(1).tolist()
            out.update({f"pass@{k}": sum(pass_at_k(G, ci, k) for ci in c) / len(c) for k in (1, G)})
        model.train()
        return out

    def show_eval(name, ev):
        print(f"{name}: greedy acc {ev['acc']:.3f} (" + " ".join(f"{f} {ev['acc_' + f]:.3f}" for f in families) +
              f") | think share {ev['think_share']:.2f} | response length {ev['response_len']:.1f}" +
              "".join(f" | {k} {v:.3f}" for k, v in ev.items() if k.startswith("pass@")))

    # -------------------------------------------------------------------------------------------- pretrain
    def lr_at(it):
        if it < cfg.warmup_steps:
            return cfg.lr * (it + 1) / cfg.warmup_steps
        frac = min(1.0, (it - cfg.warmup_steps) / max(1, cfg.pretrain_steps - cfg.warmup_steps))
        return cfg.lr / 10 + 0.5 * (cfg.lr - cfg.lr / 10) * (1 + math.cos(math.pi * frac))

    P, G = cfg.prompts_per_step, cfg.group_size
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))
    pretrain_eval, pretrain_s, ref_model, skipped = None, 0.0, None, 0
    success = torch.full((len(pool),), 0.5)  # running success rate of each RL prompt (the curriculum's estimate)

    def checkpoint():
        """Everything a resumed run needs to continue exactly as if it had never stopped."""
        save_checkpoint(ckpt_path, model=model.state_dict(), model_config=dataclasses.asdict(model.config),
                        config=dataclasses.asdict(cfg), stage=stage, step=step, rl_step=rl_step,
                        optimizer=optimizer.state_dict(), data_rng=data_rng.getstate(),
                        torch_rng=torch.get_rng_state(), sample_gen=sample_gen.get_state(), success=success,
                        skipped=skipped, pretrain_eval=pretrain_eval, pretrain_s=pretrain_s,
                        ref_model=ref_model.state_dict() if ref_model is not None else None)

    def restore_state():
        optimizer.load_state_dict(resume["optimizer"])
        data_rng.setstate(resume["data_rng"])
        torch.set_rng_state(resume["torch_rng"])
        sample_gen.set_state(resume["sample_gen"])

    try:
        if stage == "pretrain":
            if resume:
                restore_state()
            t0 = time.time() - (resume or {}).get("pretrain_s", 0.0)
            while step < cfg.pretrain_steps:
                for g in optimizer.param_groups:
                    g["lr"] = lr_at(step)
                # Imitate the teacher on fresh problems every step (the data never repeats).
                problems = generate_problems(cfg.batch_size, seed=data_rng.getrandbits(64), families=families,
                                             digits=cfg.digits)
                x, y = (t.to(device) for t in pretrain_batch(problems, data_rng, enc, cfg.think_prob, cfg.error_prob))
                with autocast:
                    logits = model(x)  # (B, T, V)
                loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                step += 1
                pretrain_s = time.time() - t0
                if step % 50 == 0 or step == 1:
                    print(f"pretrain step {step:5d} | loss {loss.item():.4f} | lr {lr_at(step):.2e} | {pretrain_s:.0f}s")
                    log(dict(stage="pretrain", step=step, loss=loss.item(), time=pretrain_s))
                if step % cfg.eval_interval == 0 or step == cfg.pretrain_steps:
                    last = step == cfg.pretrain_steps  # the last one is also RL's starting point: add pass@k
                    ev = evaluate(cfg.passk_problems if last else 0)
                    pretrain_eval = ev if last else None
                    show_eval(f"eval @ pretrain step {step}", ev)
                    log(dict(stage="pretrain_eval", step=step, **ev))
                    checkpoint()
        if resume_rl:
            pretrain_eval, pretrain_s, skipped = resume["pretrain_eval"], resume["pretrain_s"], resume["skipped"]
            success = resume["success"]
        else:  # RL starts here: measure where it starts from, unless pretraining just did
            if pretrain_eval is None:
                pretrain_eval = evaluate(cfg.passk_problems)
                show_eval("before RL", pretrain_eval)
            log(dict(stage="rl_eval", rl_step=0, **pretrain_eval))

        # ---------------------------------------------------------------------------------------- RL
        # Per step: sample G completions for each of P prompts -> grade -> advantages -> clipped loss -> AdamW.
        stage = "rl"
        if cfg.kl_coef > 0:  # the frozen reference is the policy RL started from
            ref_model = GPT(model.config).to(device).eval().requires_grad_(False)
            ref_model.load_state_dict(resume["ref_model"] if resume and resume.get("ref_model") else model.state_dict())
        optimizer = torch.optim.AdamW(groups, lr=cfg.rl_lr, betas=(0.9, 0.99), weight_decay=0.0)
        if resume_rl:
            restore_state()
        bad_steps, t_rl, final = 0, time.time(), None
        while rl_step < cfg.rl_steps:
            t0 = time.time()
            # ---- sample
            n_draw = 2 * P if cfg.dynamic_sampling else P  # DAPO oversamples, then keeps P groups
            if cfg.curriculum:  # Kimi k1.5: favour prompts the policy does not solve yet (a floor: none starve)
                idx = data_rng.choices(range(len(pool)), weights=(1.0 - success).clamp(min=0.05).tolist(), k=n_draw)
            else:
                idx = [data_rng.randrange(len(pool)) for _ in range(n_draw)]
            model.eval()
            s = sample(model, [pool_ids[i] for i in idx], G, cfg.max_new_tokens, temperature=cfg.temperature,
                       eos_id=eos_id, generator=sample_gen, pad_id=pad_id)
            # ---- verify: the reward is the verifier's; a truncated response earns nothing
            texts, grades, correct = judge(s, [pool[i].answer for i in idx for _ in range(G)])
            rewards = torch.tensor([g.reward(cfg.format_bonus) if fin else 0.0
                                    for g, fin in zip(grades, s.finished.tolist())])  # (B,)
            if cfg.dynamic_sampling:  # DAPO: we drew 2P prompts; keep P groups, those with signal first
                signal = rewards.view(-1, G).std(1) > 0  # (2P,)
                keep = sorted(range(len(idx)), key=lambda i: not signal[i])[:P]
                rows = torch.tensor([i * G + j for i in keep for j in range(G)])
                s = dataclasses.replace(s, **{f.name: getattr(s, f.name)[rows] for f in dataclasses.fields(s)
                                              if f.name != "prompt_len"})
                idx, rewards, correct = [idx[i] for i in keep], rewards[rows], correct[rows]
                texts, grades = [texts[r] for r in rows], [grades[r] for r in rows]
            for i, c in zip(idx, correct.view(P, G).float().mean(1).tolist()):
                success[i] = 0.7 * success[i] + 0.3 * c
            # ---- advantage (after optional reward shaping)
            stats = group_stats(rewards, G)
            shaped = rewards  # (B,) what the advantages see; `rewards` stays the verifier's, for logging
            if cfg.length_weight > 0 and rl_step >= cfg.length_start:
                shaped = rewards + cfg.length_weight * length_rewards(s.lengths.cpu(), correct, G)
            advantages = group_advantages(shaped, G, method=cfg.advantage, unbiased_std=cfg.unbiased_std).to(device)
            t_sample = time.time() - t0

            # ---- loss and step: mu passes over the batch, micro-batches accumulate the full-batch gradient
            t1 = time.time()
            model.train()
            for g in optimizer.param_groups:  # a short warmup: Adam's first steps are its largest
                g["lr"] = cfg.rl_lr * min(1.0, (rl_step + 1) / 10)
            agg, grad_norm = grpo_update(model, optimizer, s, advantages, cfg, autocast, ref_model)
            if agg is None:
                skipped, bad_steps = skipped + 1, bad_steps + 1
                print(f"warning: non-finite loss or gradient at RL step {rl_step + 1}: update skipped "
                      f"({bad_steps} in a row, {skipped} in all)")
                if bad_steps >= cfg.max_bad_steps:
                    sys.exit(f"error: {bad_steps} non-finite updates in a row; stopping. The last good "
                             f"checkpoint is {ckpt_path}")
                rl_step += 1
                continue
            bad_steps = 0
            rl_step += 1

            # ---- log
            lengths, fin = s.lengths.float().cpu(), s.finished.cpu()  # (B,) each
            think = torch.tensor([thinks(t) for t in texts])
            rec = dict(stage="rl", rl_step=rl_step, reward=rewards.mean().item(), accuracy=correct.float().mean().item(),
                       format_rate=sum(g.formatted for g in grades) / len(grades),
                       zero_signal=stats["zero_var_frac"], zero_signal_pred=stats["zero_var_pred"],
                       response_len=lengths.mean().item(),
                       len_correct=lengths[correct].mean().item() if correct.any() else float("nan"),
                       len_wrong=lengths[~correct].mean().item() if (~correct).any() else float("nan"),
                       think_share=think.float().mean().item(), truncated=(~fin).float().mean().item(),
                       kl=agg["kl"], clip_frac=agg["clip_frac"], entropy=agg["entropy"], grad_norm=grad_norm,
                       lp_diff=agg["lp_diff"], sample_s=t_sample, train_s=time.time() - t1, skipped=skipped)
            log(rec)
            if rl_step % cfg.log_interval == 0:
                print(RL_LINE.format(**rec))
            if rl_step % cfg.sample_interval == 0:
                print(f"  sample: {pool[idx[0]].prompt.strip()} -> {texts[0]!r} [{grades[0].reason}, "
                      f"reward {rewards[0].item():.2f}, truth {pool[idx[0]].answer}]")
            if rl_step % cfg.rl_eval_interval == 0 or rl_step == cfg.rl_steps:
                ev = final = evaluate(cfg.passk_problems)
                show_eval(f"eval @ RL step {rl_step}", ev)
                log(dict(stage="rl_eval", rl_step=rl_step, **ev))
            if rl_step % cfg.save_interval == 0 or rl_step == cfg.rl_steps:
                checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        sys.exit(f"\ninterrupted in {stage}: checkpoint saved to {ckpt_path}; continue with --init_from=resume")

    # -------------------------------------------------------------------------------------------- summary
    if final is None:  # the loop's last step evaluated already, unless it did not run (resumed a finished run)
        final = evaluate() if cfg.rl_steps else pretrain_eval
    wall = time.time() - T_START
    print(f"\nheld-out greedy accuracy ({len(eval_set)} problems: {cfg.families}, {cfg.digits} digits)")
    print(f"  {'':24s}{'accuracy':>10s}{'think share':>13s}{'response len':>14s}")
    print(f"  {'pretraining corpus':24s}{corpus_acc:10.3f}{cfg.think_prob:13.2f}{'':>14s}")
    print(f"  {'after pretraining':24s}{pretrain_eval['acc']:10.3f}{pretrain_eval['think_share']:13.2f}"
          f"{pretrain_eval['response_len']:14.1f}")
    if cfg.rl_steps:
        print(f"  {'after RL':24s}{final['acc']:10.3f}{final['think_share']:13.2f}{final['response_len']:14.1f}")
    summary = dict(pretrain_acc=pretrain_eval["acc"], rl_acc=final["acc"], corpus_acc=corpus_acc,
                   think_share_before=pretrain_eval["think_share"], think_share_after=final["think_share"],
                   pretrain_s=round(pretrain_s, 1), rl_s=round(time.time() - t_rl, 1) if cfg.rl_steps else 0.0,
                   wall_s=round(wall, 1), skipped_updates=skipped, seed=cfg.seed, preset=cfg.preset)
    log(dict(stage="summary", **summary))
    print(json.dumps(summary))
