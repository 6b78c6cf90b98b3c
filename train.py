"""
train.py: pretrain a small GPT on synthetic arithmetic, then improve it with GRPO against an exact verifier.

Run `python train.py` (CPU preset: a few minutes on 2 cores; a larger preset on one CUDA GPU), `python train.py
--help` for every knob, `python train.py --key=value ...` to change one.
The outline: config -> setup -> pretrain (imitate an imperfect teacher) -> RL loop (sample -> verify -> advantage ->
loss -> step -> log) -> eval -> save. Pretraining cannot beat its corpus (it imitates the teacher's mistakes and
mostly its direct answers); RL with the verifier as the only reward can, and learns to think on the way.
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
    digits: int = knob(3, "operand digits: the difficulty knob")
    think_prob: float = knob(0.3, "share of teacher demonstrations that show their work")
    error_prob: float = knob(0.3, "share of teacher demonstrations with one mistake")
    max_new_tokens: int = knob(96, "longest response the model may write")
    # model
    n_layer: int = knob(4, "transformer blocks")
    n_head: int = knob(4, "attention heads")
    n_embd: int = knob(128, "channels")
    block_size: int = knob(128, "context length")
    # pretraining (supervised, on response tokens only)
    pretrain_steps: int = knob(500, "supervised steps (0: skip pretraining)")
    batch_size: int = knob(64, "sequences per pretraining step")
    lr: float = knob(3e-3, "peak pretraining learning rate (warmup, then cosine to lr/10)")
    warmup_steps: int = knob(50, "linear warmup steps")
    weight_decay: float = knob(0.1, "AdamW weight decay on matrices")
    grad_clip: float = knob(1.0, "clip the gradient norm to this (0: off)")
    eval_interval: int = knob(250, "evaluate every this many steps")
    eval_problems: int = knob(200, "held-out problems per evaluation")
    # RL (GRPO against the verifier)
    rl_steps: int = knob(150, "GRPO steps (0: stop after pretraining)")
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


PRESETS = {
    "cpu": {},  # the defaults above
    "gpu": dict(digits=4, families="add,sub,mul,lin", n_layer=6, n_head=6, n_embd=384, block_size=160,
                max_new_tokens=128, pretrain_steps=2000, batch_size=128, lr=1e-3, eval_problems=500),
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
            sys.exit(f"error: --{key} takes a {kind.__name__}, got {value!r}")
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
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    dtype_why = "bf16 autocast (the GPU supports it)" if use_bf16 else f"fp32 (no bf16 autocast on {device.type})"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    print(f"device {device} ({why}), {dtype_why}, preset {cfg.preset}")
    os.makedirs(cfg.out_dir, exist_ok=True)
    ckpt_path = os.path.join(cfg.out_dir, "ckpt.pt")
    torch.manual_seed(cfg.seed)
    data_rng = random.Random(cfg.seed)

    enc = get_tokenizer()
    eos_id, pad_id = enc.encode_single_token(EOS), enc.encode_single_token(PAD)
    families = tuple(cfg.families.split(","))
    eval_set = generate_problems(cfg.eval_problems, seed=cfg.seed + 1, split="test", families=families,
                                 digits=cfg.digits)

    step, stage, resume = 0, "pretrain", None
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
        step, stage = resume["step"], resume["stage"]
        print(f"loaded {path}: stage {stage}, step {step}")
    model.to(device)
    print(f"model: {model.num_params() / 1e6:.2f}M parameters, {cfg.n_layer} layers, {cfg.n_embd} channels")
    metrics_file = open(os.path.join(cfg.out_dir, "metrics.jsonl"), "a")

    def log(record):
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()

    def evaluate(problems):
        """Greedy accuracy per family, share of responses that think, mean response length (tokens)."""
        model.eval()
        correct, thinks, lengths = {f: [] for f in families}, [], []
        for i in range(0, len(problems), 256):
            chunk = problems[i:i + 256]
            s = sample(model, [encode(enc, p.prompt) for p in chunk], 1, cfg.max_new_tokens, temperature=0,
                       eos_id=eos_id, pad_id=pad_id)
            for p, row, n, fin in zip(chunk, s.tokens[:, s.prompt_len:].tolist(), s.lengths.tolist(),
                                      s.finished.tolist()):
                text = decode(enc, row[:n - 1] if fin else row[:n])
                correct[p.family].append(fin and grade(text, p.answer).correct)
                thinks.append(text.startswith("<think>") and not text.startswith("<think></think>"))
                lengths.append(n)
        model.train()
        acc = {f: sum(v) / max(len(v), 1) for f, v in correct.items()}
        return dict(acc=sum(map(sum, correct.values())) / len(problems), **{f"acc_{f}": a for f, a in acc.items()},
                    think_share=sum(thinks) / len(thinks), response_len=sum(lengths) / len(lengths))

    # -------------------------------------------------------------------------------------------- pretrain
    # Imitate the teacher: next-token cross-entropy on the response tokens (and EOS), never on the prompt.
    def pretrain_batch():
        rows = []
        for p in generate_problems(cfg.batch_size, seed=data_rng.getrandbits(64), families=families,
                                   digits=cfg.digits):
            prompt, resp = encode(enc, p.prompt), encode(enc, demonstration(p, data_rng, cfg.think_prob,
                                                                            cfg.error_prob)[0] + EOS)
            rows.append((prompt + resp, len(prompt)))
        T = max(len(ids) for ids, _ in rows) - 1
        x = torch.full((len(rows), T), pad_id, dtype=torch.long)  # (B, T)
        y = torch.full((len(rows), T), -1, dtype=torch.long)  # (B, T), -1: no loss here
        for i, (ids, n_prompt) in enumerate(rows):
            x[i, :len(ids) - 1] = torch.tensor(ids[:-1])
            y[i, n_prompt - 1:len(ids) - 1] = torch.tensor(ids[n_prompt:])
        return x.to(device), y.to(device)

    def lr_at(it):
        if it < cfg.warmup_steps:
            return cfg.lr * (it + 1) / cfg.warmup_steps
        frac = min(1.0, (it - cfg.warmup_steps) / max(1, cfg.pretrain_steps - cfg.warmup_steps))
        return cfg.lr / 10 + 0.5 * (cfg.lr - cfg.lr / 10) * (1 + math.cos(math.pi * frac))

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [dict(params=decay, weight_decay=cfg.weight_decay), dict(params=no_decay, weight_decay=0.0)]
    if stage == "pretrain":
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))
        if resume and "optimizer" in resume:
            optimizer.load_state_dict(resume["optimizer"])
            torch.set_rng_state(resume["torch_rng"])
            data_rng.setstate(resume["data_rng"])
        t0 = time.time()
        while step < cfg.pretrain_steps:
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step)
            x, y = pretrain_batch()
            with autocast:
                logits = model(x)  # (B, T, V)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            if step % 50 == 0 or step == 1:
                print(f"pretrain step {step:5d} | loss {loss.item():.4f} | lr {lr_at(step):.2e} | "
                      f"{time.time() - t0:.0f}s")
                log(dict(stage="pretrain", step=step, loss=loss.item(), time=time.time() - t0))
            if step % cfg.eval_interval == 0 or step == cfg.pretrain_steps:
                ev = evaluate(eval_set)
                print(f"eval @ {step}: acc {ev['acc']:.3f} | " +
                      " ".join(f"{f} {ev['acc_' + f]:.3f}" for f in families) +
                      f" | think share {ev['think_share']:.2f} | response length {ev['response_len']:.1f}")
                log(dict(stage="pretrain_eval", step=step, **ev))
                save_checkpoint(ckpt_path, model=model.state_dict(), model_config=dataclasses.asdict(model.config),
                                config=dataclasses.asdict(cfg), step=step, stage="pretrain",
                                optimizer=optimizer.state_dict(), torch_rng=torch.get_rng_state(),
                                data_rng=data_rng.getstate())
        pretrain_s = time.time() - t0
        pretrain_eval = ev
    else:
        pretrain_s, pretrain_eval = resume.get("pretrain_s", 0.0), resume["pretrain_eval"]

    # -------------------------------------------------------------------------------------------- RL
    # Per step: sample G completions for P prompts -> grade them -> advantages -> clipped loss -> AdamW step.
    P, G = cfg.prompts_per_step, cfg.group_size
    pool = generate_problems(cfg.rl_pool, seed=cfg.seed + 2, families=families, digits=cfg.digits)
    pool_ids = [encode(enc, p.prompt) for p in pool]
    success = torch.full((len(pool),), 0.5)  # running success rate per pool problem (the curriculum's estimate)
    sample_gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 3)
    ref_model = None
    if cfg.kl_coef > 0:  # the frozen reference is the policy RL starts from
        ref_model = GPT(model.config).to(device).eval().requires_grad_(False)
        ref_model.load_state_dict(resume["ref_model"] if stage == "rl" else model.state_dict())
    optimizer = torch.optim.AdamW(groups, lr=cfg.rl_lr, betas=(0.9, 0.99))
    rl_step, bad_steps, skipped = 0, 0, 0
    if stage == "rl":
        optimizer.load_state_dict(resume["optimizer"])
        rl_step, skipped = resume["rl_step"], resume["skipped"]
        success, data_rng_state, gen_state = resume["success"], resume["data_rng"], resume["sample_gen"]
        data_rng.setstate(data_rng_state)
        sample_gen.set_state(gen_state)

    def rl_checkpoint():
        save_checkpoint(ckpt_path, model=model.state_dict(), model_config=dataclasses.asdict(model.config),
                        config=dataclasses.asdict(cfg), step=step, stage="rl", rl_step=rl_step, skipped=skipped,
                        optimizer=optimizer.state_dict(), data_rng=data_rng.getstate(),
                        sample_gen=sample_gen.get_state(), success=success, pretrain_eval=pretrain_eval,
                        pretrain_s=pretrain_s, ref_model=ref_model.state_dict() if ref_model else None)

    def draw_prompts(n):
        if cfg.curriculum:  # Kimi k1.5: favour what the policy does not solve yet (floor: nothing starves)
            weights = (1.0 - success).clamp(min=0.05).tolist()
            return data_rng.choices(range(len(pool)), weights=weights, k=n)
        return [data_rng.randrange(len(pool)) for _ in range(n)]

    def rollout(idx):
        """Sample G completions for each pool problem in idx and grade them."""
        s = sample(model, [pool_ids[i] for i in idx], G, cfg.max_new_tokens, temperature=cfg.temperature,
                   eos_id=eos_id, generator=sample_gen, pad_id=pad_id)
        texts, correct, rewards = [], [], []
        for r, (row, n, fin) in enumerate(zip(s.tokens[:, s.prompt_len:].tolist(), s.lengths.tolist(),
                                              s.finished.tolist())):
            text = decode(enc, row[:n - 1] if fin else row[:n])
            g = grade(text, pool[idx[r // G]].answer)
            texts.append(text)
            correct.append(fin and g.correct)
            rewards.append(reward(text, pool[idx[r // G]].answer, cfg.format_bonus) if fin else 0.0)  # truncated: 0
        return s, texts, torch.tensor(correct), torch.tensor(rewards)

    t_rl = time.time()
    try:
        while rl_step < cfg.rl_steps:
            t0 = time.time()
            # ---- sample and verify
            idx = draw_prompts(P)
            s, texts, correct, rewards = rollout(idx)
            if cfg.dynamic_sampling:  # DAPO: keep only groups with signal, refill (a bounded number of tries)
                for _ in range(4):
                    keep = rewards.view(P, G).std(1) > 0  # (P,)
                    if bool(keep.all()):
                        break
                    ...
            for i, c in zip(idx, correct.view(P, G).float().mean(1).tolist()):
                success[i] = 0.7 * success[i] + 0.3 * c
            # ---- reward shaping and advantages
            if cfg.length_weight > 0 and rl_step >= cfg.length_start:
                rewards = rewards + cfg.length_weight * length_rewards(s.lengths.float(), correct, G)
            advantages = group_advantages(rewards, G, method=cfg.advantage, unbiased_std=cfg.unbiased_std)  # (B,)
            t_sample = time.time() - t0
            ...
            rl_step += 1
    except KeyboardInterrupt:
        rl_checkpoint()
        sys.exit(f"interrupted at RL step {rl_step}: checkpoint saved to {ckpt_path}; continue with --init_from=resume")
