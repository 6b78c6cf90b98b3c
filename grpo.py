"""
grpo.py: the GRPO loss, and the per-token log-probabilities it is made of, computed without the (B, T, V) logits.

The idea: GRPO is a policy gradient on the log-probability of every sampled token, weighted by its completion's
group advantage, with PPO's clipped ratio so one batch can be reused for a few steps, and optionally a KL
penalty towards the frozen start. The one expensive piece is log pi(y_t), which needs a softmax over the
whole vocabulary at every position; `token_logprobs` computes it a chunk of rows at a time, forward and backward.

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

The fused log-prob. With logits z = h W^T / tau over V tokens and target y:
    log pi(y) = z_y - logsumexp(z),    d log pi(y) / d z_v = 1[v = y] - softmax(z)_v,
so for an upstream gradient g per position, dz = g (onehot - p), dh = dz W / tau and dW = dz^T h / tau.
Forward keeps only logsumexp per position (N numbers); backward recomputes each chunk's logits and applies
(onehot - p). Peak memory is O(K V) for a chunk instead of O(N V); the price is one extra matmul (4 instead of 3).

Choices, and how this differs from the papers:
 1. The KL term is added per token before aggregation (as in DeepSeekMath), always with k3 in the loss;
    `kl_estimate` offers k1/k2 for logging and study.
 2. Three aggregations; the default is the original GRPO's seq-mean-token-mean, whose length bias Dr. GRPO
    describes: a short wrong answer is punished more per token than a long one.
 3. Micro-batches: pass the full batch's `num_rows` and `num_tokens` to every micro-batch's call, and the sum of
    the micro-batch losses (and so of their gradients) is exactly the full-batch loss, in every mode.
 4. The log-ratios are zeroed at masked positions before exp, so garbage in padding cannot give inf * 0 = NaN.
 5. `token_logprobs` returns float32 (float64 for float64 inputs) whatever the input dtype: logsumexp, the
    softmax and the weight-gradient sum run in float32 even when the matmuls run in bf16 (autocast or bf16
    tensors); the matmul dtype is the autocast dtype when autocast is on, else that of hidden and weight.

Run: `python grpo.py` benchmarks fused vs naive forward+backward at GPT-2-small and CPU-model shapes, each
variant in its own process (a few minutes on 2 CPU cores); `python grpo.py --variant fused --shape gpt2` runs one.
Shapes: B rows, T time, C channels, V vocab, N = B*T positions, K rows per chunk.
"""
import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

LOGITS_PER_CHUNK = 2 ** 22  # chunk_size=None picks K = this // V rows (16 MB of float32 logits); see the benchmark

# -------------------------------------------------------------------------------- per-token log-probabilities


def _chunk_logits(hidden, weight, s, e, temperature, dtype):
    """Logits of rows s:e in float32 (or float64), from a matmul in `dtype`. Returns (K, V) and the scaled
    (K, C) hidden rows; dividing h rather than z by tau costs K*C instead of K*V operations."""
    h = (hidden[s:e] / temperature).to(dtype)  # (K, C)
    acc = torch.promote_types(dtype, torch.float32)
    return (h @ weight.t()).to(acc), h  # (K, V), (K, C)


class FusedTokenLogprobs(torch.autograd.Function):
    """log softmax(h W^T / tau)[y] chunk by chunk; backward recomputes each chunk's logits (see docstring)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk_size, dtype, want_entropy):
        # hidden (N, C), weight (V, C), targets (N,) long
        N, V = hidden.shape[0], weight.shape[0]
        w = weight.to(dtype)  # (V, C) a bf16 copy under autocast, as F.linear would make
        acc = torch.promote_types(dtype, torch.float32)
        lse = torch.empty(N, dtype=acc, device=hidden.device)  # (N,)
        logprobs = torch.empty(N, dtype=acc, device=hidden.device)  # (N,)
        entropy = torch.empty(N if want_entropy else 0, dtype=acc, device=hidden.device)  # (N,) or (0,)
        for s in range(0, N, chunk_size):
            e = min(s + chunk_size, N)
            z, _ = _chunk_logits(hidden, w, s, e, temperature, dtype)  # (K, V)
            lse[s:e] = torch.logsumexp(z, dim=1)
            logprobs[s:e] = z.gather(1, targets[s:e, None]).squeeze(1) - lse[s:e]
            if want_entropy:  # H = -sum p log p = lse - sum p z
                entropy[s:e] = lse[s:e] - (torch.softmax(z, dim=1) * z).sum(dim=1)
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.conf = (temperature, chunk_size, dtype)
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        hidden, weight, targets, lse = ctx.saved_tensors
        temperature, chunk_size, dtype = ctx.conf
        want_h, want_w = ctx.needs_input_grad[:2]
        w = weight.to(dtype)  # (V, C)
        dh = torch.empty_like(hidden) if want_h else None  # (N, C)
        dw = torch.zeros(weight.shape, dtype=lse.dtype, device=weight.device) if want_w else None  # (V, C)
        for s in range(0, hidden.shape[0], chunk_size):
            e = min(s + chunk_size, hidden.shape[0])
            z, h = _chunk_logits(hidden, w, s, e, temperature, dtype)  # (K, V), (K, C)
            g = grad_logprobs[s:e, None].to(z.dtype)  # (K, 1)
            dz = z.sub_(lse[s:e, None]).exp_().mul_(-g)  # (K, V) -g p, in place: one (K, V) buffer
            dz.scatter_add_(1, targets[s:e, None], g)  # (K, V) g (onehot - p)
            dz = dz.to(dtype)
            if want_h:
                dh[s:e] = dz @ w / temperature  # (K, C)
            if want_w and dw.dtype == dtype:
                dw.addmm_(dz.t(), h)  # (V, C) in place: no (V, C) temporary per chunk
            elif want_w:
                dw += dz.t() @ h  # (V, C) bf16 product, float32 sum
        return dh, (dw.to(weight.dtype) if want_w else None), None, None, None, None, None


def token_logprobs(hidden, weight, targets, temperature=1.0, chunk_size=None, return_entropy=False):
    """log pi(targets) under logits hidden @ weight^T / temperature, without materialising the logits.

    hidden (B, T, C) final hidden states, weight (V, C) the (tied) unembedding, targets (B, T) long.
    chunk_size: rows of the flattened B*T per chunk; None picks LOGITS_PER_CHUNK // V.
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
              kl_coef=0.0, loss_agg="seq-mean-token-mean", max_len=None, num_rows=None, num_tokens=None):
    """The clipped GRPO loss. Returns (loss, stats).

    logprobs (B, T) with gradient, old_logprobs and ref_logprobs (B, T) without, advantages (B,), mask (B, T)
    bool or {0, 1}: true on response tokens (EOS included), false on prompt and padding.
    clip_eps: eps_low (and eps_high unless clip_eps_high is given: DAPO's clip-higher uses 0.28).
    loss_agg: see the module docstring; seq-sum-constant needs max_len (max_new_tokens).
    Micro-batching: num_rows and num_tokens are the *full* batch's row count and unmasked-token count
    (default: this call's). Pass both to every micro-batch and sum the losses (and gradients): the result equals
    one call on the whole batch, whatever loss_agg is, because every weight w_it then depends only on row i and
    on these two totals.
    stats: 0-dim float tensors without gradient (float() or .item() them when logging; returning tensors avoids
    a GPU sync per micro-batch), token means over this call's unmasked tokens: clip_frac, clip_frac_low,
    clip_frac_high, kl (k3; 0 without ref_logprobs), ratio_mean, ratio_max."""
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
        zero = torch.zeros_like(logprobs)
        kl = kl_estimate(torch.where(mask, logprobs, zero), torch.where(mask, ref_logprobs, zero))  # (B, T)
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


def peak_bytes(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def measure(variant, shape, device, dtype, repeats, chunk_size):
    """Forward + backward of one variant, in this process. Returns best seconds and peak extra bytes."""
    B, T, C, V = SHAPES[shape]
    g = torch.Generator(device="cpu").manual_seed(0)
    hidden = torch.randn(B, T, C, generator=g).to(device).requires_grad_()  # (B, T, C)
    weight = (0.02 * torch.randn(V, C, generator=g)).to(device).requires_grad_()  # (V, C)
    targets = torch.randint(0, V, (B, T), generator=g).to(device)  # (B, T)
    grad_out = torch.randn(B, T, generator=g).to(device)  # (B, T)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = peak_bytes(device)  # after the inputs exist: only what the variant adds is counted
    times = []
    for _ in range(repeats + 1):  # the first run warms up
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
        times.append(time.perf_counter() - t0)
        del logprobs
    return min(times[1:]), peak_bytes(device) - base


def main():
    p = argparse.ArgumentParser(description="fused vs naive per-token log-probs: time and peak memory")
    p.add_argument("--variant", choices=["fused", "naive"], help="measure one variant here (else run all)")
    p.add_argument("--shape", choices=list(SHAPES), default="gpt2")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu) or a torch device")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="default: bfloat16 autocast on CUDA (as training would), float32 on CPU")
    p.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up; the best is kept")
    p.add_argument("--chunk_size", type=int, default=None, help="rows per chunk (default: see LOGITS_PER_CHUNK)")
    a = p.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    dtype = a.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    if a.variant:  # child: one measurement, one JSON line
        sec, extra = measure(a.variant, a.shape, device, getattr(torch, dtype), a.repeats, a.chunk_size)
        print(json.dumps({"seconds": sec, "peak_mb": extra / 2 ** 20}))
        return
    # parent: every variant in a fresh process, so that one's peak memory cannot hide inside another's
    print(f"device {device} ({'CUDA found' if device.type == 'cuda' else 'no CUDA'}), {dtype}, "
          f"{torch.get_num_threads()} threads, best of {a.repeats} after a warm-up")
    memory = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "max RSS"
    print(f"\n| shape (B, T, C, V) | variant | fwd+bwd s | peak extra MB ({memory}) |\n|---|---|---|---|")
    results = {}
    for shape in SHAPES:
        for variant in ("naive", "fused"):
            cmd = [sys.executable, __file__, f"--variant={variant}", f"--shape={shape}", f"--device={device}",
                   f"--dtype={dtype}", f"--repeats={a.repeats}"] + ([f"--chunk_size={a.chunk_size}"]
                                                                     if a.chunk_size else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            r = results[shape, variant] = json.loads(out.strip().splitlines()[-1])
            print(f"| {shape} {SHAPES[shape]} | {variant} | {r['seconds']:.3f} | {r['peak_mb']:.1f} |", flush=True)
    print()
    for shape in SHAPES:
        n, f = results[shape, "naive"], results[shape, "fused"]
        print(f"{shape}: fused/naive time {f['seconds'] / n['seconds']:.2f}x (target <= 1.3), "
              f"peak memory {f['peak_mb'] / max(n['peak_mb'], 1e-9):.3f}x (target <= 0.125 at gpt2)")


if __name__ == "__main__":
    main()
