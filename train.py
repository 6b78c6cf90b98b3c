"""
train.py: pretrain a small GPT on synthetic arithmetic, then improve it with GRPO against an exact verifier.

The story: the pretraining corpus comes from an imperfect teacher (data/tasks.py) who is wrong on error_prob of
the problems and shows its work on only think_prob of them. Imitation cannot beat that: the pretrained model
answers mostly directly, and mostly wrongly. RL then samples G completions per prompt, rewards only the
verifier's "correct" (verify.py), and pushes up whatever earned more than its group's mean (advantage.py,
grpo.py). Worked solutions earn more than direct guesses, so the share of responses that think rises by itself,
with nothing rewarding it directly: R1-Zero in miniature.

The outline, `main()`: config -> setup -> pretrain -> RL loop (sample -> verify -> advantage -> loss -> step ->
log) -> eval -> save. The RL objective per token, for completion i of a group and advantage A_i:
    loss = -min(rho A_i, clip(rho, 1 - eps, 1 + eps_high) A_i) + beta KL(pi || pi_ref),  rho = pi / pi_old.
How this departs from DeepSeekMath's GRPO:
 1. pi_old is the sampler's own log-probs (sample.py), not a separate forward pass; with one update per batch
    (updates_per_batch=1, the default) rho = 1 and the loss is REINFORCE with the group-mean baseline. Under bf16
    autocast (on a GPU) the sampler, in float32, and the trainer disagree by rounding (up to ~0.2 in log-prob),
    enough for the clip to act on an on-policy batch: there pi_old is the trainer's own first-pass log-probs,
    which costs nothing (the first pass computes them anyway); `dlp` still shows the gap.
 2. No KL by default (kl_coef=0, like many recent recipes); with kl_coef > 0 the reference is the policy RL
    starts from, kept frozen.
 3. The reward is the verifier's alone; truncated responses earn 0. A format bonus or Kimi's length reward, if
    asked for, is shaping: centred on its own and added to the advantages undivided by sigma (advantage.py).
 4. RL draws its prompts from a fixed pool of rl_pool training problems (Qwen3 used ~4k), optionally with a
    curriculum or DAPO-style dynamic sampling.

Thinking on and off (`--thinking=fusion`, Qwen3): every prompt ends in /think or /no_think, the teacher does as
the flag says, and RL draws both. A response that breaks its flag earns 0 (`--mode_contract`), so that RL, which
finds that thinking pays, cannot teach /no_think to think. The run ends with both modes measured, and /think under
thinking budgets (evaluation.mode_sweep), and draws the latency/accuracy curve to out_dir/modes.svg.

Run: `python train.py` (about 3.5 minutes on a 2-core CPU; the gpu preset on CUDA), `python train.py --help` for
every knob, `--key=value` to change one, `--init_from=resume` to continue a run in out_dir (Ctrl-C or SIGTERM
stop it at the end of the current step, with a checkpoint). The plumbing lives beside this file: config.py (the
knobs and their checks) and checkpoint.py (saving, resuming, the metrics log).
Shapes: P prompts per step, G group size, B = P·G rows, T sequence length, C channels, V vocab.
"""
import dataclasses
import json
import math
import os
import random
import signal
import sys
import time

import torch
import torch.nn.functional as F

from model import GPT, GPTConfig, positions
from sample import sample
from data.tokenizer import encode, EOS, EOS_ID, PAD_ID, VOCAB_SIZE
from data.tasks import generate_problems, demonstration, with_mode
from evaluation import judge, evaluate, show_eval, thinks, think_budget, mode_sweep, show_sweep
from advantage import shaped_advantages, length_rewards, group_stats
from grpo import fused_token_logprobs, grpo_loss, masked_mean
import ddp
from checkpoint import (STOP, new_run, save_checkpoint, restore_run, truncate_log, write_record, claim_out_dir,
                        request_stop)
from config import configure, make_task, check_world
from plot import mode_figure

RL_LINE = ("rl {rl_step:4d} | reward {reward:.3f} acc {accuracy:.3f} fmt {format_rate:.2f} | zero-signal "
           "{zero_signal:.2f} (pred {zero_signal_pred:.2f}) | len {response_len:.1f} (ok {len_correct:.1f} / bad "
           "{len_wrong:.1f}) | think {think_share:.2f} trunc {truncated:.2f} | loss {loss:+.4f} kl {kl:.4f} clip "
           "{clip_frac:.3f} ent {entropy:.3f} gnorm {grad_norm:.2f} dlp {lp_diff:.1e} | {sample_s:.1f}s + "
           "{train_s:.1f}s")  # one per step
EXTRA_LINES = {"mode_violations": " | broke flag {mode_violations:.2f} /no_think thinks {think_share_no_think:.2f}",
               "unexpanded": " | unexpanded {unexpanded:.2f}"}  # --thinking=fusion; poly


# -------------------------------------------------------------------------------------------- pretraining
def pretrain_batch(problems, rng, think_prob, error_prob, fusion=False, echo_prob=0.0):
    """The teacher's demonstrations of `problems` as next-token pairs x, y (B, T). Cross-entropy is taken on the
    response and its EOS only: y is -1 on the prompt and the padding. With fusion each prompt is flagged /think
    (with probability think_prob) or /no_think, and the teacher does as the flag says. echo_prob: see
    data/tasks.demonstration."""
    rows = []
    for p in problems:
        if fusion:
            p = with_mode(p, "think" if rng.random() < think_prob else "no_think")
        prompt = encode(p.prompt)
        rows.append((prompt + encode(demonstration(p, rng, think_prob, error_prob, echo_prob)[0] + EOS), len(prompt)))
    return supervised_pairs(rows)


def supervised_pairs(rows):
    """(token ids, prompt length) rows as right-padded next-token pairs x, y (B, T), y = -1 on the prompt and the
    padding so that cross-entropy sees the response (and its EOS) only."""
    T = max(len(ids) for ids, _ in rows) - 1
    x = torch.full((len(rows), T), PAD_ID, dtype=torch.long)  # (B, T)
    y = torch.full((len(rows), T), -1, dtype=torch.long)  # (B, T)
    for i, (ids, n_prompt) in enumerate(rows):
        x[i, :len(ids) - 1] = torch.tensor(ids[:-1])
        y[i, n_prompt - 1:len(ids) - 1] = torch.tensor(ids[n_prompt:])
    return x, y


def lr_at(step, cfg):
    """Linear warmup to cfg.lr, then a cosine down to cfg.lr / 10 at the last pretraining step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.pretrain_steps - cfg.warmup_steps))
    return cfg.lr / 10 + 0.5 * (cfg.lr - cfg.lr / 10) * (1 + math.cos(math.pi * frac))


def make_optimizer(model, lr, weight_decay):
    """AdamW that decays the matrices only: biases, LayerNorm gains and the like keep weight_decay 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([dict(params=[p for p in params if p.dim() >= 2], weight_decay=weight_decay),
                              dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0)],
                             lr=lr, betas=(0.9, 0.99))


def pretrain_step(model, optimizer, x, y, lr, grad_clip, autocast, n_tokens=None):
    """One supervised step on a batch x, y (B, T) at learning rate lr: the cross-entropy summed over the target
    tokens, divided by n_tokens (default: this batch's; under torchrun, the whole batch's across the ranks, whose
    gradients ddp.sum_grads adds up). Returns that loss before the step, a 0-dim tensor (asking for its value
    would make a GPU wait for every step)."""
    model.train()
    for g in optimizer.param_groups:
        g["lr"] = lr
    with autocast:
        logits = model(x)  # (B, T, V)
    n_tokens = (y >= 0).sum() if n_tokens is None else n_tokens
    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), ignore_index=-1,
                           reduction="sum") / n_tokens  # logits as (B*T, V), targets (B*T,); a 0-dim mean
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    ddp.sum_grads(model)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


# -------------------------------------------------------------------------------------------- RL
def draw_prompts(rng, success, n, curriculum):
    """n prompt indices into the pool. With the curriculum (Kimi k1.5), prompt i is drawn with probability
    proportional to 1 - success[i], its running success rate, with a floor so that no prompt starves."""
    if curriculum:
        return rng.choices(range(len(success)), weights=(1.0 - success).clamp(min=0.05).tolist(), k=n)
    return [rng.randrange(len(success)) for _ in range(n)]


def keep_groups(advantages, group_size, n_keep):
    """DAPO's dynamic sampling: of the groups in advantages (B,), the indices of n_keep, those with a signal (an
    advantage that is not 0: the only ones with a gradient) first, in drawing order otherwise."""
    has_signal = (advantages.view(-1, group_size) != 0).any(1).tolist()  # one per group
    return sorted(range(len(has_signal)), key=lambda i: not has_signal[i])[:n_keep]


def rollout(model, pool, pool_ids, run, cfg):
    """Sample -> verify -> advantage for one RL step: G completions for each of P prompts drawn from the pool,
    graded by the verifier (a truncated response earns 0), turned into group advantages. Under torchrun every
    rank draws the same prompts and uniforms and keeps its share of the prompts (ddp.py)."""
    G = cfg.group_size
    prompt_idx = draw_prompts(run["data_rng"], run["success"], cfg.prompts_per_step * (1 + cfg.dynamic_sampling),
                              cfg.curriculum)
    u = torch.rand(len(prompt_idx) * G, cfg.max_new_tokens, generator=run["sample_gen"])  # (all ranks' B, N)
    mine = ddp.my_rows(len(prompt_idx))
    prompt_idx, u = prompt_idx[mine], u[mine.start * G:mine.stop * G]
    model.eval()
    samples = sample(model, [pool_ids[i] for i in prompt_idx], G, cfg.max_new_tokens, temperature=cfg.temperature,
                     eos_id=EOS_ID, pad_id=PAD_ID, uniforms=u,
                     budget=think_budget(cfg.think_budget) if cfg.think_budget >= 0 else None)
    answers = [pool[i].answer for i in prompt_idx for _ in range(G)]
    texts, grades, correct = judge(samples, answers, cfg.check_form)
    unexpanded = []  # poly: right but not expanded (the echoed question), by the strict grader whatever pays
    if "poly" in cfg.families.split(","):
        unexpanded = [g.reason == "not_expanded" for g in (grades if cfg.check_form else judge(samples, answers)[1])]
    modes = [pool[i].mode for i in prompt_idx for _ in range(G)]  # each row's flag (None: unflagged)
    broke = [m is not None and thinks(t) != (m == "think") for t, m in zip(texts, modes)]  # did what the flag forbids
    paid = samples.finished.cpu() & ~(torch.tensor(broke) & cfg.mode_contract)  # (B,) a truncated response, or one
    correct = correct & paid  # that breaks its flag under the contract, earns nothing and is not correct anywhere
    rewards = correct.float()  # (B,) the verifier's reward
    shaping = cfg.format_bonus * (torch.tensor([g.formatted for g in grades]) & paid).float()  # (B,)
    if cfg.length_weight > 0 and run["rl_step"] >= cfg.length_start:
        shaping = shaping + cfg.length_weight * length_rewards(samples.lengths.cpu(), correct, G)
    advantages = shaped_advantages(rewards, shaping, G, method=cfg.advantage, unbiased_std=cfg.unbiased_std)  # (B,)
    pass_rates = correct.view(-1, G).float().mean(1).tolist()  # (P, G) -> each drawn prompt's pass rate
    for part in ddp.gather(list(zip(prompt_idx, pass_rates))):  # every rank updates every prompt's estimate
        for i, c in part:
            run["success"][i] = 0.7 * run["success"][i] + 0.3 * c
    zero_signal_drawn = group_stats(correct, advantages, G)["zero_signal"]
    if cfg.dynamic_sampling:  # each rank keeps half of its own groups
        keep = keep_groups(advantages, G, len(prompt_idx) // 2)
        rows = torch.tensor([i * G + j for i in keep for j in range(G)])  # (B,) the kept groups' row indices
        samples = dataclasses.replace(samples, **{f.name: getattr(samples, f.name)[rows.to(samples.tokens.device)]
                                                  for f in dataclasses.fields(samples) if f.name != "prompt_len"})
        prompt_idx, correct, advantages = [prompt_idx[i] for i in keep], correct[rows], advantages[rows]
        rewards, shaping = rewards[rows], shaping[rows]
        texts, grades, modes, broke = ([xs[r] for r in rows] for xs in (texts, grades, modes, broke))
        unexpanded = [unexpanded[r] for r in rows] if unexpanded else []
    return dict(samples=samples, prompt_idx=prompt_idx, texts=texts, grades=grades, rewards=rewards + shaping,
                correct=correct, advantages=advantages, zero_signal_drawn=zero_signal_drawn, modes=modes, broke=broke,
                unexpanded=unexpanded)


def policy_logprobs(model, x, pos, key_mask, targets, temperature, return_entropy=False):
    """log pi(targets | x) (B, T) for a batch of sampled sequences (grpo.fused_token_logprobs: without the
    (B, T, V) logits once they outgrow one chunk)."""
    hidden = model(x, pos=pos, key_mask=key_mask, return_hidden=True)  # (B, T, C)
    return fused_token_logprobs(hidden, model.lm_head.weight, targets, temperature, return_entropy=return_entropy)


def grpo_update(model, optimizer, samples, advantages, cfg, autocast, ref_model=None):
    """Loss -> step: cfg.updates_per_batch AdamW steps on one sampled batch (sample.Samples) with advantages (B,).
    Micro-batches accumulate exactly the full-batch gradient (grpo_loss gets the full batch's row and token
    counts), and the sampler's log-probs are pi_old (under autocast, the first pass's own: rho = 1 exactly). Returns the diagnostics: loss, kl, entropy and lp_diff (the
    sampler-vs-trainer log-prob gap) from the first pass, where rho = 1; clip_frac and ratio_max from the later
    passes, where the clip can act (the first, if there is only one); the last grad_norm. Returns None when a
    loss or gradient is not finite: that pass and the rest are skipped (with updates_per_batch = 1, the weights
    stay untouched; with more, the passes already taken stand)."""
    x, targets = samples.tokens[:, :-1], samples.tokens[:, 1:]  # (B, T) each
    pos, key_mask = positions(samples.valid)[:, :-1], samples.valid[:, :-1]  # (B, T) each
    mask, old_logprobs = samples.mask[:, 1:], samples.logprobs[:, 1:].clone()  # (B, T) each
    B, mu = mask.size(0), cfg.updates_per_batch
    n_rows, n_tokens = B * ddp.world_size(), ddp.sum_all(mask.sum())  # the whole batch's, across the ranks
    advantages = advantages.to(mask.device)
    model.train()
    micro = [slice(i, i + cfg.micro_batch) for i in range(0, B, cfg.micro_batch)]
    ref_logprobs = None
    if ref_model is not None:
        with torch.no_grad(), autocast:
            ref_logprobs = torch.cat([policy_logprobs(ref_model, x[m], pos[m], key_mask[m], targets[m], cfg.temperature)
                                      for m in micro])  # (B, T)
    passes = []  # per pass over the batch: token-weighted means over its micro-batches
    for _ in range(mu):
        d = {k: torch.zeros((), device=mask.device) for k in ("loss", "kl", "entropy", "clip_frac", "lp_diff",
                                                              "ratio_max")}  # 0-dim each, summed on device
        optimizer.zero_grad(set_to_none=True)
        for m in micro:
            with autocast:
                logprobs, entropy = policy_logprobs(model, x[m], pos[m], key_mask[m], targets[m], cfg.temperature,
                                                    return_entropy=True)  # (micro_batch, T) each
                if not passes and torch.is_autocast_enabled(x.device.type):  # pi_old in the trainer's precision
                    old_logprobs[m] = logprobs.detach()
            loss, stats = grpo_loss(logprobs, old_logprobs[m], advantages[m], mask[m],
                                    None if ref_logprobs is None else ref_logprobs[m], clip_eps=cfg.clip_eps,
                                    clip_eps_high=cfg.clip_eps_high or None, kl_coef=cfg.kl_coef,
                                    kl_kind=cfg.kl_kind, loss_agg=cfg.loss_agg, max_len=cfg.max_new_tokens,
                                    num_rows=n_rows, num_tokens=n_tokens)
            loss.backward()
            share = mask[m].sum() / n_tokens
            d["loss"] = d["loss"] + loss.detach()
            d["kl"] = d["kl"] + share * stats["kl"]
            d["entropy"] = d["entropy"] + share * masked_mean(entropy, mask[m])
            d["clip_frac"] = d["clip_frac"] + share * stats["clip_frac"]
            d["lp_diff"] = torch.maximum(d["lp_diff"], ((logprobs.detach() - samples.logprobs[m, 1:]).abs()
                                                        * mask[m]).max())
            d["ratio_max"] = torch.maximum(d["ratio_max"], stats["ratio_max"])
        ddp.sum_grads(model)  # the gradient of the whole batch's loss (ddp.py)
        for k in d:
            (ddp.max_all if k in ("lp_diff", "ratio_max") else ddp.sum_all)(d[k])
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf")))
        if not (math.isfinite(grad_norm) and math.isfinite(float(d["loss"]))):
            optimizer.zero_grad(set_to_none=True)
            return None
        optimizer.step()
        passes.append({k: float(v) for k, v in d.items()})
    first, acting = passes[0], passes[1:] or passes  # the clip can act only once the weights have moved
    return dict(loss=first["loss"], kl=first["kl"], entropy=first["entropy"], lp_diff=first["lp_diff"],
                clip_frac=sum(p["clip_frac"] for p in acting) / len(acting),
                ratio_max=max(p["ratio_max"] for p in acting), grad_norm=grad_norm)


def rl_record(rl_step, batch, diagnostics, sample_s, train_s):
    """The metrics of one RL step, over every rank's rows, as written to metrics.jsonl and printed by RL_LINE."""
    samples = batch["samples"]
    mine = dict(rewards=batch["rewards"].tolist(), correct=batch["correct"].tolist(), lengths=samples.lengths.tolist(),
                advantages=batch["advantages"].tolist(),
                finished=samples.finished.tolist(), formatted=[g.formatted for g in batch["grades"]],
                think=[thinks(t) for t in batch["texts"]], drawn=[batch["zero_signal_drawn"]], modes=batch["modes"],
                broke=batch["broke"], unexpanded=batch["unexpanded"])
    rows = {k: sum((part[k] for part in ddp.gather(mine)), []) for k in mine}  # all ranks' rows, in rank order
    rewards, correct, lengths, advantages = (torch.tensor(rows[k], dtype=dtype) for k, dtype in  # (all ranks' B,)
                                             (("rewards", torch.float), ("correct", torch.bool),
                                              ("lengths", torch.float), ("advantages", torch.float)))
    stats = group_stats(correct, advantages, samples.tokens.size(0) // len(batch["prompt_idx"]))
    mean = lambda xs: sum(xs) / len(xs)
    mean_or_nan = lambda x: x.mean().item() if len(x) else float("nan")
    extra = {}  # fusion: how often a flag was broken, and how often /no_think rows thought anyway
    if rows["modes"][0] is not None:
        no_think = [t for t, m in zip(rows["think"], rows["modes"]) if m == "no_think"]
        extra = dict(mode_violations=mean(rows["broke"]), think_share_no_think=mean(no_think) if no_think else
                     float("nan"))
    if rows["unexpanded"]:  # poly: how often the policy answered with an unexpanded equal expression
        extra["unexpanded"] = mean(rows["unexpanded"])
    return dict(stage="rl", rl_step=rl_step, reward=rewards.mean().item(), accuracy=correct.float().mean().item(),
                format_rate=mean(rows["formatted"]), zero_signal=stats["zero_signal"],
                zero_signal_pred=stats["zero_signal_pred"], zero_signal_drawn=mean(rows["drawn"]),
                response_len=lengths.mean().item(), len_correct=mean_or_nan(lengths[correct]),
                len_wrong=mean_or_nan(lengths[~correct]), think_share=mean(rows["think"]),
                truncated=1 - mean(rows["finished"]), **extra, **diagnostics, sample_s=sample_s, train_s=train_s)


# -------------------------------------------------------------------------------------------- main
def eval_args(cfg, passk_problems):
    """evaluation.evaluate's knobs from the config: the pass@k samples are drawn like RL's, from their own seed."""
    return cfg.max_new_tokens, passk_problems, cfg.group_size, cfg.temperature, cfg.seed + 5


def main(argv):
    t_start = time.time()
    STOP.clear()
    sys.stdout.reconfigure(line_buffering=True)  # a line at a time, also into a file or a pipe
    # ---- config, and under torchrun the process group (ddp.py)
    cfg, device, why, ckpt, note = configure(argv)
    resume = cfg.init_from == "resume"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world, device = ddp.setup(device)  # rank 0 alone prints from here on
    check_world(cfg, world)
    if note:
        print(note)

    # ---- setup: the problems, the model, the random generators, the log
    pretrains = ckpt is None or (resume and ckpt["stage"] == "pretrain")
    eval_set, eval_ids, pool, pool_ids = make_task(cfg, ckpt and ckpt["model_config"]["block_size"], pretrains)
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    print(f"device {device} ({why}), {'bf16 autocast (the GPU supports it)' if use_bf16 else 'fp32'}, "
          f"preset {cfg.preset}, {torch.get_num_threads()} CPU threads")
    ckpt_path, metrics_path = claim_out_dir(cfg.out_dir, resume, cfg.overwrite, rank)
    torch.manual_seed(cfg.seed)
    corpus_rng = random.Random(cfg.seed + 4)  # the imitation ceiling: how often the teacher is right, measured
    corpus_acc = sum(demonstration(p, corpus_rng, cfg.think_prob, cfg.error_prob, cfg.echo_prob)[1]
                     for p in pool) / len(pool)
    print(f"pretraining corpus: {cfg.families} with {cfg.digits} digits, think_prob {cfg.think_prob}, error_prob "
          f"{cfg.error_prob}: the teacher is right on {corpus_acc:.1%} of problems (the imitation ceiling); "
          f"max_new_tokens {cfg.max_new_tokens}, block_size {cfg.block_size}")
    run = new_run(cfg.seed, len(pool))
    if ckpt is None:
        model = GPT(GPTConfig(vocab_size=VOCAB_SIZE, block_size=cfg.block_size, n_layer=cfg.n_layer,
                              n_head=cfg.n_head, n_embd=cfg.n_embd))
    else:
        model = GPT(GPTConfig(**ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
    if resume:  # continue this run where it stopped
        run = restore_run(ckpt, cfg.seed, len(pool))
        if rank == 0:
            truncate_log(metrics_path, run)
        print(f"resumed {ckpt_path}: stage {run['stage']}, pretrain step {run['step']}, RL step {run['rl_step']}")
    elif ckpt is not None:  # another run's weights: a new RL stage starts from them
        run["stage"], ckpt = "rl", None
        print(f"loaded the weights of {cfg.init_from}; RL starts from them")
    model.to(device)
    print(f"model: {model.num_params() / 1e6:.2f}M parameters, {model.config.n_layer} layers, "
          f"{model.config.n_embd} channels")
    metrics = open(metrics_path if rank == 0 else os.devnull, "a")
    log = lambda record: write_record(metrics, record)
    wall_before = run["wall_s"]
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    # ---- pretrain: imitate the teacher on fresh problems every step (the data never repeats)
    if run["stage"] == "pretrain":
        optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
        if resume:
            optimizer.load_state_dict(ckpt["optimizer"])
        t0 = time.time() - run["pretrain_s"]
        while run["step"] < cfg.pretrain_steps and not ddp.any_rank(STOP):
            problems = generate_problems(cfg.batch_size, seed=run["data_rng"].getrandbits(64),
                                         families=cfg.families.split(","), digits=cfg.digits)
            x, y = pretrain_batch(problems, run["data_rng"], cfg.think_prob, cfg.error_prob,
                                  cfg.thinking == "fusion", cfg.echo_prob)  # every rank's rows
            mine = ddp.my_rows(len(x))
            loss = pretrain_step(model, optimizer, x[mine].to(device), y[mine].to(device), lr_at(run["step"], cfg),
                                 cfg.grad_clip, autocast, n_tokens=(y >= 0).sum().to(device))
            run["step"] += 1
            step, run["pretrain_s"], run["wall_s"] = run["step"], time.time() - t0, wall_before + time.time() - t_start
            if step % 50 == 0 or step == 1:
                loss = ddp.sum_all(loss).item()  # the whole batch's
                print(f"pretrain step {step:5d} | loss {loss:.4f} | lr {lr_at(step, cfg):.2e} | "
                      f"{run['pretrain_s']:.0f}s")
                log(dict(stage="pretrain", step=step, loss=loss, time=run["pretrain_s"]))
            # evaluate and checkpoint; the last eval is also RL's starting point, so it adds pass@k
            if step % cfg.eval_interval == 0 or step == cfg.pretrain_steps:
                last = step == cfg.pretrain_steps
                ev = evaluate(model, eval_set, eval_ids, *eval_args(cfg, cfg.passk_problems if last else 0))
                run["pretrain_eval"] = ev if last else None
                show_eval(f"eval @ pretrain step {step}", ev)
                log(dict(stage="pretrain_eval", step=step, **ev))
            if step % cfg.save_interval == 0 or step % cfg.eval_interval == 0 or step == cfg.pretrain_steps:
                save_checkpoint(ckpt_path, model, optimizer, None, cfg, run)

    # ---- RL: sample -> verify -> advantage -> loss -> step -> log, rl_steps times
    resume_rl = resume and ckpt["stage"] == "rl"
    if not (resume_rl and run["pretrain_eval"]) and not ddp.any_rank(STOP):  # RL starts: measure where from
        if run["pretrain_eval"] is None:
            run["pretrain_eval"] = evaluate(model, eval_set, eval_ids, *eval_args(cfg, cfg.passk_problems))
            show_eval("before RL", run["pretrain_eval"])
        if cfg.thinking == "fusion" and "modes" not in run["pretrain_eval"]:  # both modes, and the budgets
            run["pretrain_eval"]["modes"] = mode_sweep(model, eval_set, cfg.max_new_tokens)
        log(dict(stage="rl_eval", rl_step=0, **run["pretrain_eval"]))
        run["stage"] = "rl"
    ref_model = None
    if cfg.kl_coef > 0:  # the frozen reference is the policy RL started from
        if resume_rl and ckpt["ref_model"] is None:
            sys.exit("error: --kl_coef > 0, but the resumed run had no KL term: the policy it started from is lost")
        ref_model = GPT(model.config).to(device).eval().requires_grad_(False)
        ref_model.load_state_dict(ckpt["ref_model"] if resume_rl else model.state_dict())
    if run["stage"] == "rl":
        optimizer = make_optimizer(model, cfg.rl_lr, weight_decay=0.0)
        if resume_rl:
            optimizer.load_state_dict(ckpt["optimizer"])
    bad_steps, final, t_rl = 0, None, time.time() - run["rl_s"]
    while run["stage"] == "rl" and run["rl_step"] < cfg.rl_steps and not ddp.any_rank(STOP):
        t0 = time.time()
        batch = rollout(model, pool, pool_ids, run, cfg)  # sample -> verify -> advantage
        t1 = time.time()
        for g in optimizer.param_groups:  # a short warmup: Adam's first steps are its largest
            g["lr"] = cfg.rl_lr * min(1.0, (run["rl_step"] + 1) / 10)
        diagnostics = grpo_update(model, optimizer, batch["samples"], batch["advantages"], cfg, autocast, ref_model)
        run["rl_step"] += 1
        rl_step, run["rl_s"], run["wall_s"] = run["rl_step"], time.time() - t_rl, wall_before + time.time() - t_start
        if diagnostics is None:  # loss -> step failed: this update was not made
            run["skipped"], bad_steps = run["skipped"] + 1, bad_steps + 1
            print(f"warning: non-finite loss or gradient at RL step {rl_step}: update skipped ({bad_steps} in a "
                  f"row, {run['skipped']} in all)")
            if bad_steps >= cfg.max_bad_steps:
                sys.exit(f"error: {bad_steps} non-finite updates in a row; stopping. The last good checkpoint is "
                         f"{ckpt_path}")
        else:  # log: one line per step, and now and then one prompt with its completion and grade
            bad_steps = 0
            rec = rl_record(rl_step, batch, diagnostics, t1 - t0, time.time() - t1)
            log(rec)
            if rl_step % cfg.log_interval == 0:
                print(RL_LINE.format(**rec) + "".join(f.format(**rec) for k, f in EXTRA_LINES.items() if k in rec))
            if rl_step % cfg.sample_interval == 0:
                p, g = pool[batch["prompt_idx"][0]], batch["grades"][0]
                print(f"  sample: {p.prompt.strip()} -> {batch['texts'][0]!r} [{g.reason}, reward "
                      f"{batch['rewards'][0].item():.2f}, truth {p.answer}]")
        # eval and save
        if rl_step % cfg.rl_eval_interval == 0 or rl_step == cfg.rl_steps:
            final = evaluate(model, eval_set, eval_ids, *eval_args(cfg, cfg.passk_problems))
            show_eval(f"eval @ RL step {rl_step}", final)
            log(dict(stage="rl_eval", rl_step=rl_step, **final))
        if rl_step % cfg.save_interval == 0 or rl_step == cfg.rl_steps:
            save_checkpoint(ckpt_path, model, optimizer, ref_model, cfg, run)
    if ddp.any_rank(STOP) and not (run["stage"] == "rl" and run["rl_step"] >= cfg.rl_steps):  # work left
        save_checkpoint(ckpt_path, model, optimizer, ref_model, cfg, run)
        ddp.finish()
        sys.exit(f"stopped by {STOP[0] if STOP else 'another rank'} in {run['stage']}: checkpoint saved to "
                 f"{ckpt_path}; continue with "
                 "--init_from=resume")

    # ---- summary: the imitation ceiling, where RL started, where it ended
    if final is None:  # the loop's last step evaluated already, unless it did not run (resumed a finished run)
        final = evaluate(model, eval_set, eval_ids, *eval_args(cfg, 0)) if cfg.rl_steps else run["pretrain_eval"]
    before = run["pretrain_eval"]
    print(f"\nheld-out greedy accuracy ({len(eval_set)} problems: {cfg.families}, {cfg.digits} digits)")
    print(f"  {'':24s}{'accuracy':>10s}{'think share':>13s}{'response len':>14s}")
    print(f"  {'pretraining corpus':24s}{corpus_acc:10.3f}{cfg.think_prob:13.2f}{'':>14s}")
    for name, ev in [("after pretraining", before)] + ([("after RL", final)] if cfg.rl_steps else []):
        print(f"  {name:24s}{ev['acc']:10.3f}{ev['think_share']:13.2f}{ev['response_len']:14.1f}")
    if cfg.thinking == "fusion":  # thinking on and off: both modes and the budgets, before and after RL
        t0 = time.time()
        after = mode_sweep(model, eval_set, cfg.max_new_tokens) if cfg.rl_steps else before["modes"]
        sweep_s = time.time() - t0
        show_sweep(before["modes"], after)
        log(dict(stage="modes", before=before["modes"], after=after))
        if rank == 0:
            mode_figure(before["modes"], after, os.path.join(cfg.out_dir, "modes.svg"))
    summary = dict(pretrain_acc=before["acc"], rl_acc=final["acc"], corpus_acc=corpus_acc,
                   think_share_before=before["think_share"], think_share_after=final["think_share"],
                   pretrain_s=round(run["pretrain_s"], 1), rl_s=round(time.time() - t_rl, 1) if cfg.rl_steps else 0.0,
                   wall_s=round(wall_before + time.time() - t_start, 1), skipped_updates=run["skipped"],
                   seed=cfg.seed, preset=cfg.preset)
    if cfg.thinking == "fusion":
        summary.update(no_think_acc_before=before["modes"][0]["acc"], no_think_acc_after=after[0]["acc"],
                       no_think_think_share_after=after[0]["think_share"], sweep_s=round(sweep_s, 1))
    log(dict(stage="summary", **summary))
    print(json.dumps(summary))
    ddp.finish()


if __name__ == "__main__":
    main(sys.argv[1:])
