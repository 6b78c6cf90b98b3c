"""
train.py: pretrain a small GPT on synthetic arithmetic, then improve it with GRPO against an exact verifier.

The story: the pretraining corpus comes from an imperfect teacher (data/tasks.py) who is wrong on error_prob of
the problems and shows its work on only think_prob of them. Imitation cannot beat that: the pretrained model
answers mostly directly, and mostly wrongly. RL then samples G completions per prompt, rewards only the
verifier's "correct" (verify.py), and pushes up whatever earned more than its group's mean (advantage.py,
grpo.py). Worked solutions earn more than direct guesses, so the share of responses that think rises by itself,
with nothing rewarding it directly: R1-Zero in miniature.

The outline, `main()`: config -> setup -> pretrain -> RL loop -> summary. One RL step, the loop's body:
    1) sample G completions for each of P prompts drawn from a pool (sample.py)
    2) grade them: the verifier's 1 or 0 is the reward (verify.py)
    3) group advantages: each completion against its siblings (advantage.py)
    4) loss -> step: the clipped loss over micro-batches, summed into the whole batch's gradient (grpo.py)
    5) log; now and then evaluate on held-out problems and save
The objective per token, for completion i of a group and advantage A_i:
    loss = -min(rho A_i, clip(rho, 1 - eps, 1 + eps_high) A_i) + beta k(pi, pi_ref),  rho = pi / pi_old.
How this departs from DeepSeekMath's GRPO:
 1. pi_old is the sampler's own log-probs (sample.py), not a separate forward pass; with one update per batch
    (updates_per_batch=1, the default) rho = 1 and the loss is REINFORCE with the group-mean baseline. Under bf16
    autocast (on a GPU) the sampler, in float32, and the trainer disagree by rounding (up to ~0.2 in log-prob),
    enough for the clip to act on an on-policy batch: there pi_old is the trainer's own first-pass log-probs,
    which costs nothing (the first pass computes them anyway); `dlp` still shows the gap.
 2. No KL by default (kl_coef=0, like many recent recipes); with kl_coef > 0 the reference is the policy RL
    starts from, kept frozen (grpo.py says which divergence's gradient each estimator follows).
 3. The reward is the verifier's alone; truncated responses earn 0. A format bonus or Kimi's length reward, if
    asked for, is shaping: centred on its own and added to the advantages undivided by sigma (advantage.py).
 4. RL draws its prompts from a fixed pool of rl_pool training problems (Qwen3 used ~4k), optionally with a
    curriculum or DAPO-style dynamic sampling.
Options, each in one place: thinking on and off (`--thinking=fusion`, Qwen3: every prompt ends in /think or
/no_think, the teacher does as the flag says, a response that breaks its flag earns 0 (`breaks_flag`), and the run
ends with both modes measured under thinking budgets: evaluation.thinking_modes); a thinking budget in RL
(`--think_budget`, evaluation.cut_thinking); the poly family's echo rate (`unexpanded`, from verify's reasons).

Run: `python train.py` (about 3.5 minutes on a 2-core CPU; the gpu preset on CUDA), `python train.py --help` for
every knob, `--key=value` to change one, `--init_from=resume` to continue a run in out_dir (Ctrl-C or SIGTERM
stop it at the end of the current step, with a checkpoint). The plumbing lives beside this file: config.py (the
knobs and their checks), checkpoint.py (starting, saving, resuming, the metrics log), ddp.py (torchrun).
Shapes: P prompts per step, G group size, B = P·G rows, T sequence length, C channels, V vocab.
"""
import dataclasses
import json
import math
import random
import signal
import sys
import time

import torch
import torch.nn.functional as F

from model import GPT, positions
from sample import sample
from data.tokenizer import EOS_ID, PAD_ID, encode
from data.tasks import MODES, generate_problems, demonstration, fit_lengths, pretrain_batch, response, with_mode
from verify import grade, grade_samples
from tools import calculator, calls
from evaluation import evaluate, show_eval, thinks, cut_thinking, mode_sweep, thinking_modes
from advantage import shaped_advantages, length_rewards, group_stats, has_signal
from grpo import fused_token_logprobs, grpo_loss, masked_mean
import ddp
from checkpoint import start, open_run_dir, save_checkpoint, stop_if_asked, request_stop
from config import configure

RL_LINE = ("rl {rl_step:4d} | reward {reward:.3f} acc {acc:.3f} fmt {format_rate:.2f} | zero-signal "
           "{zero_signal:.2f} (pred {zero_signal_pred:.2f}) | len {response_len:.1f} (ok {len_correct:.1f} / bad "
           "{len_wrong:.1f}) | think {think_share:.2f} trunc {truncated:.2f} | loss {loss:+.4f} kl {kl:.4f} clip "
           "{clip_frac:.3f} rho {ratio_min:.2f}-{ratio_max:.2f} ent {entropy:.3f} gnorm {grad_norm:.2f} dlp "
           "{lp_diff:.1e} | {sample_s:.1f}s + {train_s:.1f}s")  # one per step
EXTRA_LINES = {"mode_violations": " | broke flag {mode_violations:.2f} /no_think thinks {think_share_no_think:.2f}",
               "unexpanded": " | unexpanded {unexpanded:.2f}",
               "tool_rate": " | tool {tool_rate:.2f} calls {calls_per_response:.2f} malformed {malformed_calls:.2f} acc "
                            "with/without {acc_tool:.2f}/{acc_no_tool:.2f}"}  # fusion; poly; --tool_prob


# -------------------------------------------------------------------------------------------- setup
def make_task(cfg, ckpt):
    """The held-out problems (distinct) and RL's pool, with their prompts' token ids; max_new_tokens and block_size
    fitted to them (data/tasks.fit_lengths). With --thinking=fusion the held-out prompts ask for /think and the
    pool holds each problem in both modes. A task whose right answers the verifier refuses is refused."""
    families = cfg.families.split(",")
    try:
        eval_set = generate_problems(cfg.eval_problems, seed=cfg.seed + 1, split="test", families=families,
                                     digits=cfg.digits, distinct=True)
        pool = generate_problems(cfg.rl_pool, seed=cfg.seed + 2, families=families, digits=cfg.digits)
        if cfg.thinking == "fusion":
            eval_set, pool = [with_mode(p, "think") for p in eval_set], [with_mode(p, m) for p in pool for m in MODES]
        for p in pool + eval_set:  # a task whose right answers earn nothing would train on nothing, silently
            try:
                gradeable = grade(response("", p.answer), p.answer).correct
            except ValueError:  # not even a truth the verifier reads
                gradeable = False
            if not gradeable:
                raise ValueError(f"the verifier cannot grade this task (--families={cfg.families} --digits="
                                 f"{cfg.digits}): it refuses the right answer {p.answer[:24]!r} (it reads at most "
                                 "40 digits per number), so no response could ever earn a reward")
        pretrains = (ckpt is None or cfg.init_from == "resume" and ckpt["stage"] == "pretrain") and cfg.pretrain_steps
        cfg.max_new_tokens, cfg.block_size = fit_lengths(cfg.max_new_tokens, cfg.block_size, pool + eval_set,
                                                         ckpt and ckpt["model_config"]["block_size"], pretrains,
                                                         cfg.tool_prob, cfg.check_lines)
    except ValueError as e:
        sys.exit(f"error: {e}")
    return eval_set, [encode(p.prompt) for p in eval_set], pool, [encode(p.prompt) for p in pool]


def describe(cfg, pool, model):
    """Print what the run starts from: the teacher (its accuracy on RL's pool, the imitation ceiling, measured)
    and the model. Returns the teacher's accuracy."""
    rng = random.Random(cfg.seed + 4)
    corpus_acc = sum(demonstration(p, rng, cfg.think_prob, cfg.error_prob, cfg.echo_prob, cfg.tool_prob,
                                   cfg.check_lines)[1] for p in pool) / len(pool)
    print(f"pretraining corpus: {cfg.families} with {cfg.digits} digits, think_prob {cfg.think_prob}, error_prob "
          f"{cfg.error_prob}: the teacher is right on {corpus_acc:.1%} of problems (the imitation ceiling); "
          f"max_new_tokens {cfg.max_new_tokens}, block_size {cfg.block_size}")
    print(f"model: {model.num_params() / 1e6:.2f}M parameters, {model.config.n_layer} layers, "
          f"{model.config.n_embd} channels")
    return corpus_acc


def held_out(model, eval_set, eval_ids, cfg, passk=True):
    """evaluation.evaluate with this run's knobs (the calculator answers calls when tools are on); its pass@k
    samples are drawn like RL's, from their own seed."""
    return evaluate(model, eval_set, eval_ids, cfg.max_new_tokens, cfg.passk_problems if passk else 0,
                    cfg.group_size, cfg.temperature, cfg.seed + 5, force=[calculator] if cfg.tool_prob > 0 else [])


# -------------------------------------------------------------------------------------------- pretraining
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


def by_length(lengths, micro_batch):
    """Row indices of micro-batches of micro_batch rows of similar length, and the columns each needs (its longest
    row), from the rows' lengths (B,): a batch sorted by length, so that each micro-batch computes little padding.
    A speed trick with a measured gain (bench/speed.py, README): a default pretraining batch is ~half padding,
    since a demonstration is a direct answer (~20 tokens with its prompt) or a worked one (~60)."""
    order = torch.argsort(lengths.cpu(), stable=True)  # (B,)
    return [(rows, int(lengths[rows].max())) for rows in order.split(micro_batch)]


def pretrain_step(model, optimizer, x, y, lr, grad_clip, autocast, num_tokens=None, micro_batch=None):
    """One supervised step on a batch x, y (B, T) at learning rate lr: the cross-entropy summed over the target
    tokens, divided by num_tokens (default: this batch's; under torchrun, the whole batch's across the ranks, whose
    gradients ddp.sum_grads adds up), accumulated over micro-batches of rows of similar length (by_length; None:
    one). Returns that loss before the step, a 0-dim tensor (asking for its value would make a GPU wait for every
    step)."""
    model.train()
    for g in optimizer.param_groups:
        g["lr"] = lr
    num_tokens = (y >= 0).sum() if num_tokens is None else num_tokens
    optimizer.zero_grad(set_to_none=True)
    loss = torch.zeros((), device=x.device)
    for rows, width in by_length((x != PAD_ID).sum(1), micro_batch or len(x)):  # PAD is only ever padding
        with autocast:
            logits = model(x[rows, :width])  # (rows, width, V)
        part = F.cross_entropy(logits.float().flatten(0, 1), y[rows, :width].flatten(), ignore_index=-1,
                               reduction="sum") / num_tokens  # logits as (rows*width, V), targets (rows*width,)
        part.backward()
        loss += part.detach()
    ddp.sum_grads(model)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss


def pretrain(model, optimizer, run, cfg, eval_set, eval_ids, autocast, log, ckpt_path):
    """Imitate the teacher on fresh problems every step (the data never repeats) up to cfg.pretrain_steps, with a
    loss line every 50 steps, a held-out evaluation every eval_interval (the last one, with pass@k, is where RL
    starts from) and a checkpoint every save_interval. Under torchrun each rank trains on its share of a batch."""
    device, t0 = next(model.parameters()).device, time.time() - run["pretrain_s"]
    while run["step"] < cfg.pretrain_steps:
        stop_if_asked(ckpt_path, model, optimizer, None, cfg, run)
        problems = generate_problems(cfg.batch_size, seed=run["data_rng"].getrandbits(64),
                                     families=cfg.families.split(","), digits=cfg.digits)
        x, y = pretrain_batch(problems, run["data_rng"], cfg.think_prob, cfg.error_prob, cfg.thinking == "fusion",
                              cfg.echo_prob, cfg.tool_prob, cfg.check_lines)  # every rank's rows
        mine = ddp.my_rows(len(x))
        loss = pretrain_step(model, optimizer, x[mine].to(device), y[mine].to(device), lr_at(run["step"], cfg),
                             cfg.grad_clip, autocast, num_tokens=(y >= 0).sum().to(device), micro_batch=cfg.micro_batch)
        run["step"] += 1
        step, run["pretrain_s"], last = run["step"], time.time() - t0, run["step"] == cfg.pretrain_steps
        if step % 50 == 0 or step == 1:
            loss = ddp.sum_all(loss).item()  # the whole batch's
            print(f"pretrain step {step:5d} | loss {loss:.4f} | lr {lr_at(step, cfg):.2e} | {run['pretrain_s']:.0f}s")
            log(dict(stage="pretrain", step=step, loss=loss, time=run["pretrain_s"]))
        if step % cfg.eval_interval == 0 or last:
            ev = held_out(model, eval_set, eval_ids, cfg, passk=last)
            run["pretrain_eval"] = ev if last else None
            show_eval(f"eval @ pretrain step {step}", ev)
            log(dict(stage="pretrain_eval", step=step, **ev))
        if step % cfg.save_interval == 0 or step % cfg.eval_interval == 0 or last:
            save_checkpoint(ckpt_path, model, optimizer, None, cfg, run)
    run["stage"] = "rl_start"


# -------------------------------------------------------------------------------------------- RL
def edge_of_ability(model, pool, pool_ids, cfg):
    """--filter_pool (Kimi k1.5, Qwen3): the indices of the pool's prompts the policy gets right in some but not all
    of G samples (RL's temperature, their own generator). The others would give all-equal groups: no signal."""
    kept = []
    for i in range(0, len(pool), 256):
        samples = sample(model.eval(), pool_ids[i:i + 256], cfg.group_size, cfg.max_new_tokens, cfg.temperature,
                         EOS_ID, generator=torch.Generator().manual_seed(cfg.seed + 6), pad_id=PAD_ID)
        grades = grade_samples(samples, [p.answer for p in pool[i:i + 256] for _ in range(cfg.group_size)])[1]
        right = torch.tensor([g.correct for g in grades]).view(-1, cfg.group_size).sum(1)  # (prompts,)
        kept += [i + j for j, c in enumerate(right.tolist()) if 0 < c < cfg.group_size]
    print(f"--filter_pool: {len(kept)} of {len(pool)} prompts are right in some but not all of {cfg.group_size} "
          "samples; RL draws from those")
    return kept


def start_rl(model, run, cfg, eval_set, eval_ids, log, optimizer_state, ref_state, pool, pool_ids):
    """Where RL starts from, measured once (pretraining's last evaluation, if it ran; with fusion, both modes under
    the thinking budgets too; with --filter_pool, which prompts it can learn from), the frozen reference the KL
    term pulls towards (None without one: the weights RL starts from, or on resume the saved ones), and RL's
    optimizer (fresh, or on resume its saved state)."""
    if run["stage"] == "rl_start":
        if cfg.filter_pool:
            run["kept"] = edge_of_ability(model, pool, pool_ids, cfg)
        if run["pretrain_eval"] is None:  # not measured by pretraining's last eval
            run["pretrain_eval"] = held_out(model, eval_set, eval_ids, cfg)
            show_eval("before RL", run["pretrain_eval"])
        if cfg.thinking == "fusion":
            run["pretrain_eval"]["modes"] = mode_sweep(model, eval_set, cfg.max_new_tokens)
        log(dict(stage="rl_eval", rl_step=0, **run["pretrain_eval"]))
        run["stage"] = "rl"
    ref_model = None
    if cfg.kl_coef > 0:
        ref_model = GPT(model.config).to(next(model.parameters()).device).eval().requires_grad_(False)
        ref_model.load_state_dict(ref_state or model.state_dict())
    optimizer = make_optimizer(model, cfg.rl_lr, weight_decay=0.0)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    return ref_model, optimizer


def draw_prompts(run, pool_size, cfg):
    """This rank's prompt indices for one RL step, and the uniforms (B, max_new_tokens) its rows draw with. Every
    rank draws all of them from the same generators and keeps its share (ddp.py). With the curriculum (Kimi
    k1.5), prompt i is drawn with probability proportional to 1 - its running success rate, with a floor so that
    no prompt starves; with dynamic sampling, twice the prompts are drawn."""
    n, G = cfg.prompts_per_step * (1 + cfg.dynamic_sampling), cfg.group_size
    pool = run["kept"] or range(pool_size)  # --filter_pool: the prompts at the edge of the policy's ability
    if cfg.curriculum:
        idx = run["data_rng"].choices(pool, weights=(1.0 - run["success"][list(pool)]).clamp(min=0.05).tolist(), k=n)
    else:
        idx = [pool[run["data_rng"].randrange(len(pool))] for _ in range(n)]
    u = torch.rand(n * G, cfg.max_new_tokens, generator=run["sample_gen"])  # (all ranks' B, N)
    mine = ddp.my_rows(n)
    return idx[mine], u[mine.start * G:mine.stop * G]


def sampling_policy(model, run, staleness, sampler):
    """The policy that samples this step: the model itself, or with staleness k its weights of k optimizer steps
    before, as an async trainer's sampler lags its trainer (the first k steps sample with the starting weights).
    run["lagged"] holds the last k + 1 steps' weights, so a checkpoint saves them and a resumed run samples as an
    uninterrupted one; sampler is a spare model they are loaded into."""
    if not staleness:
        return model
    run["lagged"] = run["lagged"][-staleness:] + [{k: v.detach().clone() for k, v in model.state_dict().items()}]
    sampler.load_state_dict(run["lagged"][0])
    return sampler


def breaks_flag(texts, problems):
    """(B,) bool: the response does what its prompt's /think or /no_think flag forbids (thinks when told not to,
    or does not when told to). Always False for unflagged prompts."""
    return torch.tensor([p.mode is not None and thinks(t) != (p.mode == "think") for t, p in zip(texts, problems)])


def shaping(grades, correct, broke, lengths, rl_step, cfg):
    """(B,) the shaping terms, weighted: format_bonus for every formatted response, right or wrong, that kept its
    flag (under the contract); Kimi k1.5's length reward from length_start on. advantage.shaped_advantages adds
    them to the verifier's advantages."""
    formatted = torch.tensor([g.formatted for g in grades]) & ~(broke & cfg.mode_contract)  # (B,)
    terms = cfg.format_bonus * formatted.float()  # (B,)
    if cfg.length_weight > 0 and rl_step >= cfg.length_start:
        terms = terms + cfg.length_weight * length_rewards(lengths.cpu(), correct, cfg.group_size)
    return terms


def track_success(run, prompt_idx, correct, group_size):
    """The curriculum's running success rate of every drawn prompt (all ranks'), from its group's pass rate."""
    pass_rates = correct.view(-1, group_size).float().mean(1).tolist()  # (P, G) -> each prompt's pass rate
    for part in ddp.gather(list(zip(prompt_idx, pass_rates))):
        for i, c in part:
            run["success"][i] = 0.7 * run["success"][i] + 0.3 * c


def keep_groups(batch, group_size):
    """DAPO's dynamic sampling: of a batch of 2P groups, the P with a signal (an advantage that is not 0: the only
    ones with a gradient) first, in drawing order otherwise. batch: a dict of per-row tensors (B, ...), lists of B
    and a sample.Samples; returns the same for the kept groups' rows."""
    signal = has_signal(batch["advantages"], group_size).tolist()  # one per group
    keep = sorted(range(len(signal)), key=lambda i: not signal[i])[:len(signal) // 2]
    rows = torch.tensor([i * group_size + j for i in keep for j in range(group_size)])  # (B / 2,)
    kept = {k: [v[r] for r in rows] if isinstance(v, list) else v[rows] for k, v in batch.items() if k != "samples"}
    s = batch["samples"]
    return dict(kept, samples=dataclasses.replace(s, **{f.name: getattr(s, f.name)[rows.to(s.tokens.device)]
                                                       for f in dataclasses.fields(s) if f.name != "prompt_len"}))


def policy_logprobs(model, samples, rows, width, temperature):
    """log pi(token | its prefix) (len(rows), width - 1) for rows of a sampled batch, up to column `width`, and
    each position's entropy, without the (B, T, V) logits once they outgrow one chunk (grpo.fused_token_logprobs)."""
    x, key_mask = samples.tokens[rows, :width - 1], samples.key_mask[rows, :width - 1]  # (rows, T) each
    hidden = model(x, pos=positions(key_mask), key_mask=key_mask, return_hidden=True)  # (rows, T, C)
    return fused_token_logprobs(hidden, model.lm_head.weight, samples.tokens[rows, 1:width], temperature,
                                return_entropy=True)


def grpo_update(model, optimizer, samples, advantages, ref_model, cfg, autocast):
    """Loss -> step, updates_per_batch times on one sampled batch (sample.Samples) with advantages (B,): each pass
    sums the clipped loss's gradient over micro-batches into the whole batch's (grpo_loss divides by the whole
    batch's row and token counts, all ranks' under torchrun), clips its norm and takes one AdamW step. pi_old is
    the sampler's log-probs (under autocast and fresh samples, the first pass's own, in the trainer's precision:
    rho = 1 exactly). Returns per pass the micro-
    batches' (rows, loss, logprobs, entropy, stats) and the gradient norm, for `diagnostics`; or None when a loss
    or gradient is not finite: that pass and the rest are skipped (with one pass, the weights stay untouched)."""
    B, mask, old_logprobs = len(advantages), samples.mask[:, 1:], samples.logprobs[:, 1:].clone()  # (B, T) each
    knobs = dict(clip_eps=cfg.clip_eps, clip_eps_high=cfg.clip_eps_high, kl_coef=cfg.kl_coef, kl_kind=cfg.kl_kind,
                 loss_agg=cfg.loss_agg, max_len=cfg.max_new_tokens, policy_loss=cfg.policy_loss,
                 gspo_eps=cfg.gspo_eps, num_rows=B * ddp.world_size(),
                 num_tokens=ddp.sum_all(mask.sum()))  # the whole batch's counts, across the ranks
    micro_batches = by_length(samples.prompt_len + samples.lengths, cfg.micro_batch)  # [(rows, width)]
    ref_logprobs = [None] * len(micro_batches)
    if ref_model is not None:
        with torch.no_grad(), autocast:
            ref_logprobs = [policy_logprobs(ref_model, samples, rows, width, cfg.temperature)[0]
                            for rows, width in micro_batches]
    passes = []
    for _ in range(cfg.updates_per_batch):
        optimizer.zero_grad(set_to_none=True)
        micro = []
        for (rows, width), ref in zip(micro_batches, ref_logprobs):
            with autocast:
                logprobs, entropy = policy_logprobs(model.train(), samples, rows, width, cfg.temperature)  # (rows, T)
                if not passes and not cfg.staleness and torch.is_autocast_enabled(logprobs.device.type):
                    old_logprobs[rows, :width - 1] = logprobs.detach()
            loss, stats = grpo_loss(logprobs, old_logprobs[rows, :width - 1], advantages[rows],
                                    mask[rows, :width - 1], ref, **knobs)
            loss.backward()
            micro.append((rows, width, loss.detach(), logprobs.detach(), entropy, stats))
        ddp.sum_grads(model)  # the gradient of the whole batch's loss (ddp.py)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf")))
        if not (math.isfinite(grad_norm) and math.isfinite(float(ddp.sum_all(sum(m[2] for m in micro))))):
            optimizer.zero_grad(set_to_none=True)
            return None
        optimizer.step()
        passes.append((micro, grad_norm))
    return passes


def diagnostics(passes, samples):
    """What grpo_update's passes did, over the whole batch (all ranks): loss, kl, entropy and lp_diff (the gap
    between the trainer's and the sampler's log-probs) from the first pass, where rho = 1 unless the samples are
    stale; clip_frac, ratio_min and ratio_max (of the ratio the loss clips) from the later passes, where the clip
    can act (the first, if there is only one, as with stale samples); the last grad_norm."""
    mask = samples.mask[:, 1:]  # (B, T)
    num_tokens = ddp.sum_all(mask.sum())
    per_pass = []
    for micro, _ in passes:
        zero = torch.zeros((), device=mask.device)
        d = dict(loss=zero, kl=zero, entropy=zero, clip_frac=zero, lp_diff=zero, ratio_max=zero,
                 ratio_min=torch.full((), float("inf"), device=mask.device))
        for rows, width, loss, logprobs, entropy, stats in micro:
            m = mask[rows, :width - 1]  # (rows, T)
            share = m.sum() / num_tokens
            d["loss"] = d["loss"] + loss
            d["kl"] = d["kl"] + share * stats["kl"]
            d["entropy"] = d["entropy"] + share * masked_mean(entropy, m)
            d["clip_frac"] = d["clip_frac"] + share * stats["clip_frac"]
            d["lp_diff"] = torch.maximum(d["lp_diff"], ((logprobs - samples.logprobs[rows, 1:width]).abs() * m).max())
            d["ratio_max"] = torch.maximum(d["ratio_max"], stats["ratio_max"])
            d["ratio_min"] = torch.minimum(d["ratio_min"], stats["ratio_min"])
        d["ratio_min"] = -d["ratio_min"]  # a max over the ranks, of its negative
        per_pass.append({k: float((ddp.max_all if k in ("lp_diff", "ratio_max", "ratio_min") else ddp.sum_all)(v))
                         for k, v in d.items()})
    first, acting = per_pass[0], per_pass[1:] or per_pass  # the clip can act only once the weights have moved
    return dict(loss=first["loss"], kl=first["kl"], entropy=first["entropy"], lp_diff=first["lp_diff"],
                clip_frac=sum(p["clip_frac"] for p in acting) / len(acting),
                ratio_min=min(-p["ratio_min"] for p in acting), ratio_max=max(p["ratio_max"] for p in acting),
                grad_norm=passes[-1][1])


def rl_record(rl_step, batch, zero_signal_drawn, cfg):
    """The metrics of one RL step over every rank's rows, as metrics.jsonl holds them and RL_LINE prints them."""
    samples, grades = batch["samples"], batch["grades"]
    mine = dict(rewards=batch["rewards"].tolist(), correct=batch["correct"].tolist(),
                advantages=batch["advantages"].tolist(), lengths=samples.lengths.tolist(),
                finished=samples.finished.tolist(), formatted=[g.formatted for g in grades],
                think=[thinks(t) for t in batch["texts"]], drawn=[zero_signal_drawn], broke=batch["broke"].tolist(),
                no_think=[p.mode == "no_think" for p in batch["problems"]],
                unexpanded=[g.reason == "not_expanded" for g in grades], calls=[calls(t) for t in batch["texts"]])
    rows = {k: sum((part[k] for part in ddp.gather(mine)), []) for k in mine}  # all ranks' rows, in rank order
    mean = lambda xs: sum(xs) / len(xs) if len(xs) else float("nan")  # noqa: E731
    t_mean = lambda x: x.mean().item() if len(x) else float("nan")  # noqa: E731
    correct, lengths = torch.tensor(rows["correct"]), torch.tensor(rows["lengths"], dtype=torch.float)  # (B,) each
    stats = group_stats(correct, torch.tensor(rows["advantages"]), cfg.group_size)
    out = dict(stage="rl", rl_step=rl_step, reward=t_mean(torch.tensor(rows["rewards"])), acc=t_mean(correct.float()),
               format_rate=mean(rows["formatted"]), zero_signal=stats["zero_signal"],
               zero_signal_pred=stats["zero_signal_pred"], zero_signal_drawn=mean(rows["drawn"]),
               response_len=t_mean(lengths), len_correct=t_mean(lengths[correct]), len_wrong=t_mean(lengths[~correct]),
               think_share=mean(rows["think"]), truncated=1 - mean(rows["finished"]))
    if cfg.thinking == "fusion":  # how often a flag was broken, and how often /no_think rows thought anyway
        out.update(mode_violations=mean(rows["broke"]),
                   think_share_no_think=mean([t for t, n in zip(rows["think"], rows["no_think"]) if n]))
    if "poly" in cfg.families.split(","):  # the echo: equal to the truth, not expanded (paid with check_form off)
        out["unexpanded"] = mean(rows["unexpanded"])
    if cfg.tool_prob > 0:  # how often the calculator is called, how well, and whether calling pays
        used = [n > 0 for n, _ in rows["calls"]]
        out.update(tool_rate=mean(used), calls_per_response=mean([n for n, _ in rows["calls"]]),
                   malformed_calls=sum(bad for _, bad in rows["calls"]) / max(1, sum(n for n, _ in rows["calls"])),
                   acc_tool=mean([c for c, u in zip(rows["correct"], used) if u]),
                   acc_no_tool=mean([c for c, u in zip(rows["correct"], used) if not u]))
    return out


def report(rl_step, batch, zero_signal_drawn, passes, cfg, log, **seconds):
    """Log one RL step's record (rl_record, diagnostics, the seconds), print its line every log_interval steps and,
    every sample_interval steps, one prompt with its completion and grade: the best debugging aid in RL."""
    rec = dict(rl_record(rl_step, batch, zero_signal_drawn, cfg), **diagnostics(passes, batch["samples"]), **seconds)
    log(rec)
    if rl_step % cfg.log_interval == 0:
        print(RL_LINE.format(**rec) + "".join(f.format(**rec) for k, f in EXTRA_LINES.items() if k in rec))
    if rl_step % cfg.sample_interval == 0:
        p, g = batch["problems"][0], batch["grades"][0]
        print(f"  sample: {p.prompt.strip()} -> {batch['texts'][0]!r} [{g.reason}, reward "
              f"{batch['rewards'][0].item():.2f}, truth {p.answer}]")


def summarize(model, run, cfg, eval_set, eval_ids, corpus_acc, final, t_rl, log, rank):
    """The run's end: the imitation ceiling, where RL started and where it ended, as a table and one JSON line
    (also logged); with fusion, both modes under the thinking budgets, before and after RL (evaluation.py)."""
    before = run["pretrain_eval"]
    final = final or (held_out(model, eval_set, eval_ids, cfg, passk=False) if cfg.rl_steps else before)
    print(f"\nheld-out greedy accuracy ({len(eval_set)} problems: {cfg.families}, {cfg.digits} digits)")
    print(f"  {'':24s}{'accuracy':>10s}{'think share':>13s}{'response len':>14s}")
    print(f"  {'pretraining corpus':24s}{corpus_acc:10.3f}{cfg.think_prob:13.2f}{'':>14s}")
    for name, ev in [("after pretraining", before)] + ([("after RL", final)] if cfg.rl_steps else []):
        print(f"  {name:24s}{ev['acc']:10.3f}{ev['think_share']:13.2f}{ev['response_len']:14.1f}")
    summary = dict(pretrain_acc=before["acc"], rl_acc=final["acc"], corpus_acc=corpus_acc,
                   think_share_before=before["think_share"], think_share_after=final["think_share"],
                   pretrain_s=round(run["pretrain_s"], 1), rl_s=round(time.time() - t_rl, 1) if cfg.rl_steps else 0.0,
                   wall_s=round(time.time() - run["t0"], 1), skipped_updates=run["skipped"], seed=cfg.seed,
                   preset=cfg.preset)
    if cfg.thinking == "fusion":
        summary.update(thinking_modes(model, eval_set, cfg.max_new_tokens, before["modes"], cfg.rl_steps > 0, log,
                                      f"{cfg.out_dir}/modes.svg" if rank == 0 else None))
    log(dict(stage="summary", **summary))
    print(json.dumps(summary))


# -------------------------------------------------------------------------------------------- main
def main(argv):
    # ---- config: typed knobs and a preset; on resume, the saved run's config (config.py)
    sys.stdout.reconfigure(line_buffering=True)  # a line at a time, also into a file or a pipe
    cfg, ckpt = configure(argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, device, why = ddp.setup(cfg.device)  # rank 0 alone prints from here on
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    print(f"device {device} ({why}), {'bf16 autocast (the GPU supports it)' if use_bf16 else 'fp32'}, "
          f"preset {cfg.preset}, {torch.get_num_threads()} CPU threads")

    # ---- setup: the problems, the model and the run's state (fresh, resumed, or another run's weights), the log
    eval_set, eval_ids, pool, pool_ids = make_task(cfg, ckpt)
    model, run, optimizer_state, ref_state = start(cfg, ckpt, len(pool))
    model.to(device)
    ckpt_path, log = open_run_dir(cfg, run, rank)
    corpus_acc = describe(cfg, pool, model)  # prints the teacher and the model
    run["t0"] = time.time() - run["wall_s"]  # the run's seconds, across resumes: time.time() - run["t0"]
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    # ---- pretrain: imitate the teacher
    if run["stage"] == "pretrain":
        optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
        if optimizer_state:
            optimizer.load_state_dict(optimizer_state)
            optimizer_state = None  # the next optimizer, RL's, starts afresh
        pretrain(model, optimizer, run, cfg, eval_set, eval_ids, autocast, log, ckpt_path)

    # ---- RL starts: where from (held-out; fusion: both modes); the frozen reference (with a KL term); an optimizer
    ref_model, optimizer = start_rl(model, run, cfg, eval_set, eval_ids, log, optimizer_state, ref_state, pool,
                                    pool_ids)
    G = cfg.group_size
    force = ([cut_thinking(cfg.think_budget)] if cfg.think_budget >= 0 else []) + ([calculator] if cfg.tool_prob else [])
    sampler = GPT(model.config).to(device) if cfg.staleness else None  # stale weights are loaded into it
    bad_steps, final, t_rl = 0, None, time.time() - run["rl_s"]
    while run["rl_step"] < cfg.rl_steps:
        stop_if_asked(ckpt_path, model, optimizer, ref_model, cfg, run)
        t0 = time.time()
        # 1) sample G completions for each of P prompts drawn from the pool (under torchrun, this rank's share)
        prompt_idx, uniforms = draw_prompts(run, len(pool), cfg)
        policy = sampling_policy(model, run, cfg.staleness, sampler)  # with staleness, k optimizer steps old
        samples = sample(policy.eval(), [pool_ids[i] for i in prompt_idx], G, cfg.max_new_tokens, cfg.temperature,
                         EOS_ID, uniforms=uniforms, pad_id=PAD_ID, force=force)
        # 2) grade: the verifier's verdict is the reward (a truncated response, or one that breaks its flag, earns 0)
        problems = [pool[i] for i in prompt_idx for _ in range(G)]
        texts, grades = grade_samples(samples, [p.answer for p in problems], cfg.check_form)
        broke = breaks_flag(texts, problems)  # (B,)
        correct = torch.tensor([g.correct for g in grades]) & ~(broke & cfg.mode_contract)  # (B,)
        # 3) group advantages: how much better than its siblings each completion did, plus any shaping
        extra = shaping(grades, correct, broke, samples.lengths, run["rl_step"], cfg)  # (B,)
        advantages = shaped_advantages(correct.float(), extra, G, cfg.advantage, unbiased_std=cfg.unbiased_std)
        track_success(run, prompt_idx, correct, G)
        batch = dict(samples=samples, problems=problems, texts=texts, grades=grades, correct=correct,
                     rewards=correct.float() + extra, advantages=advantages, broke=broke)
        zero_signal_drawn = group_stats(correct, advantages, G)["zero_signal"]
        if cfg.dynamic_sampling:
            batch = keep_groups(batch, G)
        t1 = time.time()
        # 4) loss -> step: the clipped loss over micro-batches, summed into the whole batch's gradient, one step
        for g in optimizer.param_groups:  # a short warmup: Adam's first steps are its largest
            g["lr"] = cfg.rl_lr * min(1.0, (run["rl_step"] + 1) / 10)
        passes = grpo_update(model, optimizer, batch["samples"], batch["advantages"], ref_model, cfg, autocast)
        run["rl_step"] += 1
        rl_step, run["rl_s"] = run["rl_step"], time.time() - t_rl
        # 5) log one line (and now and then one prompt, its completion and grade); evaluate; save
        if passes is None:  # loss -> step failed: this update was not made
            run["skipped"], bad_steps = run["skipped"] + 1, bad_steps + 1
            print(f"warning: non-finite loss or gradient at RL step {rl_step}: update skipped ({bad_steps} in a "
                  f"row, {run['skipped']} in all)")
            if bad_steps >= cfg.max_bad_steps:
                sys.exit(f"error: {bad_steps} non-finite updates in a row; stopping. The last good checkpoint is "
                         f"{ckpt_path}")
        else:
            bad_steps = 0
            report(rl_step, batch, zero_signal_drawn, passes, cfg, log, sample_s=t1 - t0, train_s=time.time() - t1)
        if rl_step % cfg.rl_eval_interval == 0 or rl_step == cfg.rl_steps:
            final = held_out(model, eval_set, eval_ids, cfg)
            show_eval(f"eval @ RL step {rl_step}", final)
            log(dict(stage="rl_eval", rl_step=rl_step, **final))
        if rl_step % cfg.save_interval == 0 or rl_step == cfg.rl_steps:
            save_checkpoint(ckpt_path, model, optimizer, ref_model, cfg, run)

    # ---- summary: the imitation ceiling, where RL started, where it ended
    summarize(model, run, cfg, eval_set, eval_ids, corpus_acc, final, t_rl, log, rank)
    ddp.finish()


if __name__ == "__main__":
    main(sys.argv[1:])
