"""
grpo.py: the GRPO loss, and the per-token log-probabilities it is made of, computed without the (B, T, V) logits.

The idea: GRPO is a policy gradient on the log-probability of every sampled token, weighted by its completion's
group advantage, with PPO's clipped ratio so one batch can be reused for a few steps, and optionally a KL
penalty towards the frozen start. The one expensive piece is log pi(y_t), which needs a softmax over the
whole vocabulary at every position; `token_logprobs` computes it a chunk at a time, forward and backward.

The loss. Per token, with rho = exp(logprobs - old_logprobs) and A the completion's advantage,
    l_t = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A) + kl_coef * k3_t,
    loss = sum_{i,t} w_it mask_it l_it,    w_it = 1/(R |o_i|)  seq-mean-token-mean (GRPO), R = rows
                                           w_it = 1/N_tok       token-mean (DAPO), N_tok = unmasked tokens
                                           w_it = 1/(max_len R) seq-sum-constant (Dr. GRPO).
 * On-policy (old_logprobs = logprobs.detach(), the first step on a batch): rho = 1, so the value is
   -sum w_it A_i, which is ~0 for seq-mean-token-mean because group advantages are centred (other weightings
   leave a length-weighted average of the advantages). But grad rho = rho grad logprobs = grad logprobs, so
   grad loss = -sum w_it A_i grad log pi(y_t): exactly REINFORCE with the group baseline. The value is not
   the point; the gradient is (tests/test_grpo.py checks both).
 * The clip removes the gradient of a token when the step already moved it far enough the way A wants:
   A > 0 and rho > 1 + eps_high, or A < 0 and rho < 1 - eps_low. `clip_frac` counts exactly those tokens.
 * KL estimators (Schulman, "Approximating KL divergence"), samples from pi, u = ref_logprobs - logprobs:
   k1 = -u (unbiased, can be < 0), k2 = u^2 / 2 (biased, low variance), k3 = e^u - u - 1 (unbiased, >= 0), so
   E_pi[k3] = sum pi (pi_ref/pi) - 1 + KL(pi || pi_ref) = KL(pi || pi_ref).

The fused log-prob. With logits z = h W^T / tau over V tokens and target y,
    log pi(y) = z_y - log sum_v e^{z_v},   so   d log pi(y) / d z_v = 1[v = y] - e^{z_v} / sum_u e^{z_u}
                                                                 = onehot_v - p_v,
and for an upstream gradient g per position, dz = g (onehot - p), dh = dz W / tau and dW = dz^T h / tau.
Forward walks over chunks of K rows and keeps one number per position, lse = log sum_v e^{z_v}. Given lse,
p_v = exp(z_v - lse) needs only column v, so backward walks over blocks of the vocabulary: it recomputes that
block's logits for all rows, applies (onehot - p), adds into dh and writes the block of dW once. Peak memory is
a few chunk buffers of ~K V numbers instead of the (N, V) logits, their log-softmax and its gradient; the price
is one extra matmul (4 instead of 3).

Choices, and how this differs from the papers:
 1. The KL term is added per token before aggregation (as in DeepSeekMath), with k3 by default; kl_kind
    swaps in k1 or k2 for study.
 2. Three aggregations; the default is the original GRPO's seq-mean-token-mean, whose length bias Dr. GRPO
    describes: a short wrong answer is punished more per token than a long one.
 3. Micro-batches: pass the full batch's `num_rows` and `num_tokens` to every micro-batch's call, and the sum of
    the micro-batch losses (and so of their gradients) is exactly the full-batch loss, in every mode.
 4. The log-ratios are zeroed at masked positions before exp, so garbage in padding cannot give inf * 0 = NaN.
 5. `token_logprobs` returns float32 (float64 for float64 inputs) whatever the input dtype: the log-softmax,
    the softmax, onehot - p and the sum of dh over blocks are float32 even when the matmuls run in bf16 (under
    autocast, or on bf16 tensors); the matmul dtype is the autocast dtype when autocast is on, else that of
    hidden and weight. Every target must be a valid token id: put any id (PAD) at masked positions.
 6. The backward walks the vocabulary, not the rows: a row-chunked backward must read and rewrite all of dW
    (V x C) once per chunk, and measured ~6% slower than this one on a 2-core CPU at GPT-2 shape.
 7. The default chunk (LOGITS_PER_CHUNK) is tuned for a 2-core CPU; on a GPU, where each chunk costs a few
    kernel launches, a larger chunk_size is likely faster (not measured here).

Run: `python grpo.py` benchmarks fused vs naive forward+backward at GPT-2-small and CPU-model shapes: time with
both variants alternating in one process, peak memory with each alone in a fresh process (about 2.5 minutes on
2 CPU cores); `python grpo.py --shape cpu` measures one shape.
Shapes: B rows, T time, C channels, V vocab, N = B*T positions, K rows per chunk, Vb columns per vocabulary block.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

LOGITS_PER_CHUNK = 12_000_000  # chunk_size=None: K = this // V rows (238 for GPT-2: 48 MB buffers of logits)

# -------------------------------------------------------------------------------- per-token log-probabilities


def _chunk_logits(hidden, w, s, e, temperature, out):
    """Logits of rows s:e, z = (h / tau) @ w^T (K, V), written into the reusable buffer `out` in w's dtype.
    Dividing h rather than z by tau costs K*C operations instead of K*V."""
    h = hidden[s:e].to(w.dtype)  # (K, C)
    if temperature != 1.0:
        h = h / temperature
    return torch.mm(h, w.t(), out=out[:e - s])  # (K, V)


class FusedTokenLogprobs(torch.autograd.Function):
    """log softmax(h W^T / tau)[y]: forward over chunks of rows, backward over blocks of the vocabulary."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk_size, dtype, want_entropy):
        # hidden (N, C), weight (V, C), targets (N,) long; dtype: the matmuls' dtype
        N, V = hidden.shape[0], weight.shape[0]
        K, acc = min(chunk_size, N), torch.promote_types(dtype, torch.float32)
        w = weight.to(dtype)  # (V, C) a bf16 copy under autocast, as F.linear would make
        z_buf = torch.empty(K, V, dtype=dtype, device=hidden.device)  # (K, V) reused by every chunk
        logp_buf = torch.empty(K, V, dtype=acc, device=hidden.device)  # (K, V) ditto: the only big tensors
        logprobs = torch.empty(N, dtype=acc, device=hidden.device)  # (N,)
        lse = torch.empty(N, dtype=acc, device=hidden.device)  # (N,) log sum_v e^{z_v}, all backward needs
        entropy = torch.empty(N if want_entropy else 0, dtype=acc, device=hidden.device)  # (N,) or (0,)
        for s in range(0, N, chunk_size):
            e = min(s + chunk_size, N)
            z = _chunk_logits(hidden, w, s, e, temperature, z_buf)  # (K, V)
            logp = torch.log_softmax(z, dim=1, dtype=acc, out=logp_buf[:e - s])  # (K, V) in float32
            logprobs[s:e] = logp.gather(1, targets[s:e, None]).squeeze(1)
            lse[s:e] = z.gather(1, targets[s:e, None]).squeeze(1).to(acc) - logprobs[s:e]  # z_y - log p_y
            if want_entropy:
                entropy[s:e] = -(logp.exp() * logp).sum(dim=1)
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.conf = (temperature, chunk_size, dtype)
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        # With lse known, the columns of p = exp(z - lse) are independent, so the backward walks over blocks of
        # the vocabulary: each block of dW is then written once (instead of being read and rewritten for every
        # chunk of rows) and only the small (N, C) dh is accumulated. dz = g (onehot - p) / tau is formed in
        # float32 before any bf16 cast: when p_y -> 1, onehot - p is small and rounding p first would lose it.
        hidden, weight, targets, lse = ctx.saved_tensors
        temperature, chunk_size, dtype = ctx.conf
        want_h, want_w = ctx.needs_input_grad[:2]
        N, V = hidden.shape[0], weight.shape[0]
        acc = torch.promote_types(dtype, torch.float32)
        Vb = max(1, min(V, chunk_size * V // max(N, 1)))  # as many logits per block as a chunk of rows had
        w, h = weight.to(dtype), hidden.to(dtype)  # (V, C), (N, C)
        h_tau = h / temperature if temperature != 1.0 else h  # (N, C)
        g = grad_logprobs[:, None] / -temperature  # (N, 1)
        z_buf = torch.empty(N * Vb, dtype=dtype, device=hidden.device)  # (N, Vb) reused by every block
        dh = torch.zeros(hidden.shape, dtype=acc, device=hidden.device) if want_h else None  # (N, C)
        dw = torch.empty_like(weight) if want_w else None  # (V, C) every block written once: no float32 sum
        for a in range(0, V, Vb):
            b = min(a + Vb, V)
            z = torch.mm(h_tau, w[a:b].t(), out=z_buf[:N * (b - a)].view(N, b - a))  # (N, Vb) recomputed
            dz = z.to(acc).sub_(lse[:, None]).exp_()  # (N, Vb) p for columns a:b
            hit = ((targets >= a) & (targets < b)).to(acc)  # (N,) 1 where the target is in this block
            col = (targets - a).clamp(0, b - a - 1)  # (N,) its column there (any column when hit is 0)
            dz.scatter_add_(1, col[:, None], -hit[:, None])  # (N, Vb) p - onehot, with no host sync
            dz = dz.mul_(g).to(dtype)  # (N, Vb) g (onehot - p) / tau
            if want_h and dh.dtype == dtype:
                dh.addmm_(dz, w[a:b])  # (N, C) in place: no temporary
            elif want_h:
                dh += dz @ w[a:b]  # (N, C) bf16 product, float32 sum
            if want_w and dw.dtype == dtype:
                torch.mm(dz.t(), h, out=dw[a:b])  # (Vb, C) written once, in place
            elif want_w:
                dw[a:b] = dz.t() @ h  # (Vb, C)
        return (dh.to(hidden.dtype) if want_h else None), dw, None, None, None, None, None


def token_logprobs(hidden, weight, targets, temperature=1.0, chunk_size=None, return_entropy=False):
    """log pi(targets) under logits hidden @ weight^T / temperature, without materialising the logits.

    hidden (B, T, C) final hidden states, weight (V, C) the (tied) unembedding, targets (B, T) long.
    chunk_size: rows of the flattened B*T per forward chunk (None: LOGITS_PER_CHUNK // V); the backward's
    vocabulary blocks hold as many logits (chunk_size * V / (B*T) columns for all rows).
    Returns logprobs (B, T) float32, differentiable w.r.t. hidden and weight, and with return_entropy also
    the entropy of each position's distribution (B, T), without gradient, for logging."""
    B, T, C = hidden.shape
    chunk_size = chunk_size or max(1, LOGITS_PER_CHUNK // weight.shape[0])
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    else:
        dtype = torch.promote_types(hidden.dtype, weight.dtype)
    logprobs, entropy = FusedTokenLogprobs.apply(hidden.reshape(B * T, C), weight, targets.reshape(B * T),
                                                 float(temperature), int(chunk_size), dtype, return_entropy)
    logprobs = logprobs.view(B, T)  # (B, T)
    return (logprobs, entropy.view(B, T)) if return_entropy else logprobs


def naive_token_logprobs(hidden, weight, targets, temperature=1.0):
    """The obvious reference: full (B, T, V) logits, log_softmax, gather. Same shapes as token_logprobs."""
    logits = (hidden @ weight.t()).float()  # (B, T, V)
    if temperature != 1.0:
        logits = logits / temperature
    return F.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)  # (B, T)

# -------------------------------------------------------------------------------- the loss


def masked_mean(x, mask, dim=None):
    """Mean of x over the positions where mask is true (all of them when dim is None, else along dim).
    x and mask broadcastable; an all-masked slice gives 0, not NaN."""
    mask = mask.bool()
    total = torch.where(mask, x, torch.zeros_like(x))
    if dim is None:
        return total.sum() / mask.sum().clamp(min=1)
    return total.sum(dim) / mask.sum(dim).clamp(min=1)


def kl_estimate(logprobs, ref_logprobs, kind="k3"):
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi. Both (B, T) -> (B, T)."""
    u = ref_logprobs - logprobs  # (B, T) log(pi_ref / pi)
    if kind == "k1":
        return -u
    if kind == "k2":
        return 0.5 * u ** 2
    if kind == "k3":
        return torch.expm1(u) - u  # e^u - 1 - u, accurate for small u
    raise ValueError(f"unknown KL estimator {kind!r}; choose k1, k2 or k3")


LOSS_AGGS = ("seq-mean-token-mean", "token-mean", "seq-sum-constant")


def grpo_loss(logprobs, old_logprobs, advantages, mask, ref_logprobs=None, clip_eps=0.2, clip_eps_high=None,
              kl_coef=0.0, loss_agg="seq-mean-token-mean", max_len=None, num_rows=None, num_tokens=None,
              kl_kind="k3"):
    """The clipped GRPO loss. Returns (loss, stats).

    logprobs (B, T) with gradient, old_logprobs and ref_logprobs (B, T) without, advantages (B,), mask (B, T)
    bool or {0, 1}: true on response tokens (EOS included), false on prompt and padding.
    clip_eps: eps_low (and eps_high unless clip_eps_high is given: DAPO's clip-higher uses 0.28).
    loss_agg: see the module docstring; seq-sum-constant needs max_len (max_new_tokens).
    kl_kind: the estimator of KL(pi || pi_ref) in the loss and in stats["kl"] (k3, GRPO's, by default).
    Micro-batching: num_rows and num_tokens are the *full* batch's row count and unmasked-token count
    (default: this call's). Pass both to every micro-batch and sum the losses (and gradients): the result equals
    one call on the whole batch, whatever loss_agg is, because every weight w_it then depends only on row i and
    on these two totals.
    stats: 0-dim float tensors without gradient (float() or .item() them when logging; returning tensors avoids
    a GPU sync per micro-batch), token means over this call's unmasked tokens: clip_frac, clip_frac_low,
    clip_frac_high, kl (the kl_kind estimate; 0 without ref_logprobs), ratio_mean, ratio_max."""
    if loss_agg not in LOSS_AGGS:
        raise ValueError(f"unknown loss_agg {loss_agg!r}; choose one of {LOSS_AGGS}")
    if loss_agg == "seq-sum-constant" and max_len is None:
        raise ValueError("loss_agg='seq-sum-constant' divides by max_len * rows: pass max_len (max_new_tokens)")
    if kl_coef != 0.0 and ref_logprobs is None:
        raise ValueError("kl_coef != 0 needs ref_logprobs")
    mask = mask.bool()
    eps_low, eps_high = clip_eps, (clip_eps if clip_eps_high is None else clip_eps_high)
    adv = advantages[:, None].to(logprobs.dtype)  # (B, 1)

    log_ratio = torch.where(mask, logprobs - old_logprobs, torch.zeros_like(logprobs))  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    per_token = -torch.min(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)  # (B, T)
    if ref_logprobs is not None:
        zero = torch.zeros_like(logprobs)  # masked positions get u = 0, hence kl = 0 and no gradient
        kl = kl_estimate(torch.where(mask, logprobs, zero), torch.where(mask, ref_logprobs, zero), kl_kind)
        if kl_coef != 0.0:
            per_token = per_token + kl_coef * kl
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))  # (B, T)

    rows = logprobs.shape[0] if num_rows is None else num_rows
    if loss_agg == "seq-mean-token-mean":
        loss = (per_token.sum(1) / mask.sum(1).clamp(min=1)).sum() / rows
    elif loss_agg == "token-mean":
        loss = per_token.sum() / (mask.sum().clamp(min=1) if num_tokens is None else num_tokens)
    else:
        loss = per_token.sum() / (max_len * rows)

    with torch.no_grad():
        high = (adv > 0) & (ratio > 1 + eps_high) & mask  # (B, T) gradient removed by the upper clip
        low = (adv < 0) & (ratio < 1 - eps_low) & mask  # (B, T) gradient removed by the lower clip
        stats = {
            "clip_frac": masked_mean((high | low).float(), mask),
            "clip_frac_low": masked_mean(low.float(), mask),
            "clip_frac_high": masked_mean(high.float(), mask),
            "kl": masked_mean(kl, mask) if ref_logprobs is not None else torch.zeros((), device=mask.device),
            "ratio_mean": masked_mean(ratio, mask),
            "ratio_max": torch.where(mask, ratio, torch.zeros_like(ratio)).max(),
        }
    return loss, {k: v.detach().float() for k, v in stats.items()}

# -------------------------------------------------------------------------------- benchmark: python grpo.py

SHAPES = {"gpt2": (8, 512, 768, 50257), "cpu": (64, 96, 128, 264)}  # B, T, C, V (cpu: model.py's default)


def make_inputs(shape, device):
    B, T, C, V = SHAPES[shape]
    g = torch.Generator(device=device).manual_seed(0)
    # made in place, so that no temporary larger than the inputs raises the peak before the baseline
    hidden = torch.randn(B, T, C, generator=g, device=device).requires_grad_()  # (B, T, C)
    weight = torch.empty(V, C, device=device).normal_(0.0, 0.02, generator=g).requires_grad_()  # (V, C)
    targets = torch.randint(0, V, (B, T), generator=g, device=device)  # (B, T)
    grad_out = torch.randn(B, T, generator=g, device=device)  # (B, T)
    return hidden, weight, targets, grad_out


def step(variant, hidden, weight, targets, grad_out, dtype, chunk_size):
    """One forward + backward of the per-token log-probs; returns its seconds."""
    device = hidden.device
    hidden.grad = weight.grad = None
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        if variant == "fused":
            logprobs = token_logprobs(hidden, weight, targets, chunk_size=chunk_size)
        else:
            logprobs = naive_token_logprobs(hidden, weight, targets)
    logprobs.backward(grad_out)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def peak_rss():
    """This process's peak RSS in bytes (Linux). Not getrusage's ru_maxrss: exec carries the parent's peak into
    that, so a child of a big parent would report the parent's."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) * 1024


def peak_memory(variant, shape, device, dtype, chunk_size):
    """Run in a fresh process: the peak bytes one step adds to what the inputs hold (the gradients count)."""
    hidden, weight, targets, grad_out = make_inputs(shape, device)
    # warm up on all rows but 1/8 of the vocabulary, so that loading kernels and starting thread pools is
    # not counted; then the peak restarts from what is held now: the inputs
    v = max(8, weight.shape[0] // 8)
    step(variant, hidden, weight[:v].detach().requires_grad_(), targets % v, grad_out, dtype, chunk_size)
    hidden.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        with open("/proc/self/clear_refs", "w") as f:  # Linux only: peak RSS := current RSS
            f.write("5")
        base = peak_rss()
    step(variant, hidden, weight, targets, grad_out, dtype, chunk_size)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - base
    return peak_rss() - base


def best_times(shape, device, dtype, rounds, chunk_size):
    """Both variants in this process, alternating, so that a change in machine load hits both alike."""
    inputs = make_inputs(shape, device)
    best = {"naive": float("inf"), "fused": float("inf")}
    for i in range(rounds + 1):  # round 0 warms up
        for variant in best:
            t = [step(variant, *inputs, dtype, chunk_size)]
            while sum(t) < 0.5:  # short shapes: many steps, the best one counts
                t.append(step(variant, *inputs, dtype, chunk_size))
            if i > 0:
                best[variant] = min(best[variant], *t)
    return best


def main():
    p = argparse.ArgumentParser(description="fused vs naive per-token log-probs: time and peak memory")
    p.add_argument("--memory_of", choices=["fused", "naive"], help="(internal) print one variant's peak memory")
    p.add_argument("--shape", choices=list(SHAPES), default=None, help="one shape (default: all)")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu) or a torch device")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="default: bfloat16 autocast on CUDA (as training would), float32 on CPU")
    p.add_argument("--rounds", type=int, default=2, help="timed rounds of (naive, fused); the best time counts")
    p.add_argument("--chunk_size", type=int, default=None, help="rows per chunk (default: see LOGITS_PER_CHUNK)")
    a = p.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    dtype = a.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    if a.memory_of:  # child
        print(peak_memory(a.memory_of, a.shape, device, getattr(torch, dtype), a.chunk_size))
        return
    print(f"device {device} ({'CUDA found' if device.type == 'cuda' else 'no CUDA'}), {dtype}, "
          f"{torch.get_num_threads()} threads")
    memory = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "RSS (VmHWM)"
    print(f"time: best of {a.rounds} alternating rounds in this process; memory: each variant alone in a fresh "
          f"process, peak {memory} of one step above its inputs (the gradients included)")
    print("\n| shape (B, T, C, V) | variant | fwd+bwd s | peak extra MiB |\n|---|---|---|---|")
    # glibc keeps freed blocks below its (self-raising) mmap threshold in the heap, so RSS would track the
    # heap's history instead of the live tensors; a fixed 64 KiB threshold returns every tensor buffer to the OS
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    load, ratios = os.getloadavg()[0], []
    for shape in [a.shape] if a.shape else list(SHAPES):
        mib = {}
        for variant in ("naive", "fused"):
            cmd = [sys.executable, __file__, f"--memory_of={variant}", f"--shape={shape}", f"--device={device}",
                   f"--dtype={dtype}"] + ([f"--chunk_size={a.chunk_size}"] if a.chunk_size else [])
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if r.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
            mib[variant] = int(r.stdout.split()[-1]) / 2 ** 20
        sec = best_times(shape, device, getattr(torch, dtype), a.rounds, a.chunk_size)
        B, T, C, V = SHAPES[shape]
        for variant in ("naive", "fused"):
            print(f"| {shape} {SHAPES[shape]} | {variant} | {sec[variant]:.3f} | {mib[variant]:.1f} |", flush=True)
            if mib[variant] < 4 * (B * T + V) * C / 2 ** 20:  # less than the gradients it returns
                print("  ^ less than the gradients it returns: this measurement is wrong")
        ratios.append(f"{shape}: fused/naive time {sec['fused'] / sec['naive']:.2f}x (target <= 1.3), "
                      f"peak memory {mib['fused'] / max(mib['naive'], 1e-9):.3f}x (target <= 0.125 at gpt2)")
    print(f"\nload average (1 min) {load:.1f} before, {os.getloadavg()[0]:.1f} after: other work on the machine "
          "slows the timings")
    print("\n".join(ratios))


if __name__ == "__main__":
    main()
