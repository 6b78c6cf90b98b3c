"""
grpo.py: the GRPO loss, and the per-token log-probabilities it is made of.

The idea: GRPO is a policy gradient on the log-probability of every sampled token, weighted by its completion's
group advantage, with PPO's clipped ratio so one batch can be reused for a few steps, and optionally a KL
penalty towards the frozen start. In reading order:

1. Per-token log-probs. With logits z = h W^T / tau over V tokens (h the model's final hidden state, W the
   unembedding) and the token y that was sampled,
       log pi(y) = z_y - log sum_v e^{z_v}        (`token_logprobs`: log_softmax, then gather)
2. KL estimators (Schulman 2020, "Approximating KL divergence"), on tokens y drawn from pi, with
   u = log pi_ref(y) - log pi(y):  k1 = -u,  k2 = u^2 / 2,  k3 = e^u - u - 1.
   Their *values*: k1 and k3 are unbiased estimates of KL(pi || pi_ref) (k3 is also >= 0 and has less variance:
   E_pi[k3] = sum pi (pi_ref/pi) - 1 + KL(pi || pi_ref)); k2 is biased, close to KL when pi ~ pi_ref.
   Their *gradients*, when k is added to the loss on pi's tokens as GRPO does, are another matter (Tang & Munos
   2025, "On a few pitfalls in KL divergence gradient estimation for RL"). With grad u = -grad log pi:
       E_pi[grad k1] = E_pi[grad log pi]                         = 0                   no pull at all
       E_pi[grad k2] = sum pi (log pi - log pi_ref) grad log pi   = grad KL(pi || pi_ref)
       E_pi[grad k3] = sum (pi - pi_ref) grad log pi             = grad KL(pi_ref || pi), the reverse direction
   So DeepSeekMath's k3 in the loss regularises towards pi_ref, but by the reverse KL's gradient, not by the
   KL(pi || pi_ref) its formula names; k2 is the one whose gradient is the forward KL's. (k1 as a penalty inside
   the reward, detached, is the REINFORCE way to follow grad KL(pi || pi_ref); this project does not do that.)
   `python grpo.py` prints the exact expected gradients of a 6-token example; tests/test_grpo.py proves them.
3. The loss (`grpo_loss`). Per token, with rho = exp(logprobs - old_logprobs) and A the completion's advantage,
       l_t = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A) + kl_coef * sg(rho) k_t  (k3 by default),
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
 * After the clip (`policy_term`, --policy_loss): GSPO clips one ratio per sequence, the geometric mean of its
   tokens' (Qwen3's later RL); CISPO keeps every token's gradient and only caps the ratio as a stop-gradient
   weight (MiniMax-M1, ScaleRL). All three are REINFORCE on-policy; they differ once the samples are off-policy:
   reused (updates_per_batch > 1) or stale (an async trainer's sampler lags its trainer).
4. The same log-probs without the (B, T, V) logits (`fused_token_logprobs`, what train.py calls). At GPT-2's
   vocabulary the logits of one micro-batch, their log-softmax and its gradient are the biggest tensors of the
   whole step. Since d log pi(y) / d z_v = 1[v = y] - p_v, an upstream gradient g per position gives
   dz = g (onehot - p), dh = dz W / tau and dW = dz^T h / tau. Forward walks over chunks of K rows and keeps one
   number per position, lse = log sum_v e^{z_v}; given lse, p_v = exp(z_v - lse) needs only column v, so
   backward walks over blocks of the vocabulary, recomputing that block's logits. Peak memory is a few chunk
   buffers of ~K V numbers; the price is one extra matmul (4 instead of 3). When all rows fit in one chunk it
   is the plain computation: nothing to save there. With this project's 264-token vocabulary a chunk holds
   45k positions, more than train.py's micro-batches have (64 x ~100 on CPU, 128 x ~190 in the gpu preset), so
   the chunks start to matter only for bigger batches or a bigger vocabulary (GPT-2's 50k: 238 rows a chunk).

Choices, and how this differs from the papers:
 1. The KL term is added per token before aggregation (as in DeepSeekMath), with k3 by default; kl_kind swaps
    in k1 or k2 (item 2 says which gradient each follows). Each token's term is weighted by the detached ratio
    sg(rho) = pi / pi_old: on-policy that is 1, and when the tokens come from pi_old (updates_per_batch > 1, stale
    samples) it keeps each kind's expected gradient the one in the table, since E_old[sg(pi/pi_old) g] = E_pi[g].
    DeepSeekMath omits it. The logged stats["kl"] is k3's value whatever kind the loss uses (weighted the same
    way): an unbiased, non-negative estimate of KL(pi || pi_ref).
 2. Three aggregations; the default is the original GRPO's seq-mean-token-mean, whose length bias Dr. GRPO
    describes: a short wrong answer is punished more per token than a long one.
 3. Micro-batches: pass the full batch's `num_rows` and `num_tokens` to every micro-batch's call, and the sum of
    the micro-batch losses (and so of their gradients) is exactly the full-batch loss, in every mode.
 4. The log-ratios are zeroed at masked positions before exp, so garbage in padding cannot give inf * 0 = NaN.
 5. Log-probs are float32 (float64 for float64 inputs) whatever the input dtype: under bf16 autocast the
    matmuls run in bf16, the log-softmax and (fused) onehot - p in float32. Every target must be a valid token
    id: put any id (PAD) at masked positions.

Run: `python grpo.py` prints the worked numbers: one group of two responses (4 and 7 tokens), the loss and the
gradient each aggregation puts on every token, what the clip does, the three policy losses' gradients on one
example, and the KL estimators' exact expected gradients. bench/logprobs.py measures the fused
gather's time and memory. Shapes: B rows, T time, C channels, V vocab, N = B*T positions, K rows per chunk.
"""
import torch
import torch.nn.functional as F


def token_logprobs(hidden, weight, targets, temperature=1.0, return_entropy=False):
    """log pi(targets) under logits hidden @ weight^T / temperature: the definition, with the full logits.
    hidden (B, T, C) final hidden states, weight (V, C) the (tied) unembedding, targets (B, T) long.
    Returns logprobs (B, T) in float32 (float64 for float64 inputs), and with return_entropy also each
    position's entropy (B, T), without gradient, for logging."""
    logits = hidden @ weight.t()  # (B, T, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature  # (B, T, V)
    logp = F.log_softmax(logits, dim=-1)  # (B, T, V)
    logprobs = logp.gather(-1, targets[..., None]).squeeze(-1)  # (B, T)
    if not return_entropy:
        return logprobs
    with torch.no_grad():
        entropy = -(logp.exp() * logp).sum(-1)  # (B, T)
    return logprobs, entropy


KL_KINDS = ("k1", "k2", "k3")


def kl_estimate(logprobs, ref_logprobs, kind="k3"):
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi. Both (B, T) -> (B, T)."""
    u = ref_logprobs - logprobs  # (B, T) log(pi_ref / pi)
    if kind == "k1":
        return -u
    if kind == "k2":
        return 0.5 * u ** 2
    if kind == "k3":
        return torch.expm1(u) - u  # e^u - 1 - u, accurate for small u
    raise ValueError(f"unknown KL estimator {kind!r}; choose one of {KL_KINDS}")


def masked_mean(x, mask, dim=None):
    """Mean of x over the positions where mask is true (all of them when dim is None, else along dim).
    x and mask broadcastable; an all-masked slice gives 0, not NaN."""
    mask = mask.bool()
    total = torch.where(mask, x, torch.zeros_like(x))
    if dim is None:
        return total.sum() / mask.sum().clamp(min=1)
    return total.sum(dim) / mask.sum(dim).clamp(min=1)


LOSS_AGGS = ("seq-mean-token-mean", "token-mean", "seq-sum-constant")
POLICY_LOSSES = ("clip", "gspo", "cispo")


def grpo_loss(logprobs, old_logprobs, advantages, mask, ref_logprobs=None, clip_eps=0.2, clip_eps_high=0.0,
              kl_coef=0.0, loss_agg="seq-mean-token-mean", max_len=None, num_rows=None, num_tokens=None,
              kl_kind="k3", policy_loss="clip", gspo_eps=4e-4):
    """The clipped GRPO loss. Returns (loss, stats).

    logprobs (B, T) with gradient, old_logprobs and ref_logprobs (B, T) without, advantages (B,), mask (B, T)
    bool or {0, 1}: true on response tokens (EOS included), false on prompt and padding.
    clip_eps: eps_low (and eps_high unless clip_eps_high > 0: DAPO's clip-higher uses 0.28).
    loss_agg: see the module docstring; seq-sum-constant needs max_len (max_new_tokens).
    kl_kind: the estimator in the loss (k3, GRPO's, by default; module docstring: the gradient each follows).
    policy_loss: clip (PPO's, GRPO's), gspo or cispo (`policy_term`); gspo_eps: GSPO's clip range on its
    sequence ratio.
    Micro-batching: num_rows and num_tokens are the *full* batch's row count and unmasked-token count
    (default: this call's). Pass both to every micro-batch and sum the losses (and gradients): the result equals
    one call on the whole batch, whatever loss_agg is, because every weight w_it then depends only on row i and
    on these two totals (GSPO's ratio is a mean over one row's tokens: rows are never split).
    stats: 0-dim float tensors without gradient (float() or .item() them when logging; returning tensors avoids
    a GPU sync per micro-batch), token means over this call's unmasked tokens: clip_frac (the tokens whose
    gradient the clip removed, or for cispo whose weight it capped), clip_frac_low, clip_frac_high, kl (k3's
    estimate of KL(pi || pi_ref), whatever kl_kind is; 0 without ref_logprobs), ratio_mean, ratio_min, ratio_max
    (of the ratio the loss clips: per token, or gspo's per sequence)."""
    if loss_agg not in LOSS_AGGS:
        raise ValueError(f"unknown loss_agg {loss_agg!r}; choose one of {LOSS_AGGS}")
    if loss_agg == "seq-sum-constant" and max_len is None:
        raise ValueError("loss_agg='seq-sum-constant' divides by max_len * rows: pass max_len (max_new_tokens)")
    if kl_coef != 0.0 and ref_logprobs is None:
        raise ValueError("kl_coef != 0 needs ref_logprobs")
    if advantages.shape != logprobs.shape[:1]:  # a (B, 1) would broadcast to (B, B, T): a wrong loss, silently
        raise ValueError(f"advantages must have shape (B,) = ({logprobs.shape[0]},), one per row; got "
                         f"{tuple(advantages.shape)}")
    if policy_loss not in POLICY_LOSSES:
        raise ValueError(f"unknown policy_loss {policy_loss!r}; choose one of {POLICY_LOSSES}")
    mask = mask.bool()
    adv = advantages[:, None].to(logprobs.dtype)  # (B, 1)

    log_ratio = torch.where(mask, logprobs - old_logprobs, torch.zeros_like(logprobs))  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    per_token, clipped_ratio, high, low = policy_term(policy_loss, logprobs, log_ratio, ratio, adv, mask, clip_eps,
                                                      clip_eps_high or clip_eps, gspo_eps)  # (B, T) each
    if ref_logprobs is not None:
        zero = torch.zeros_like(logprobs)  # masked positions get u = 0, hence kl = 0 and no gradient
        logprobs_m, ref_m = torch.where(mask, logprobs, zero), torch.where(mask, ref_logprobs, zero)  # (B, T) each
        weight = ratio.detach()  # (B, T) pi / pi_old: the tokens came from pi_old (1 on-policy)
        kl = weight * kl_estimate(logprobs_m, ref_m, "k3")  # (B, T) what is logged
        if kl_coef != 0.0:
            per_token = per_token + kl_coef * weight * kl_estimate(logprobs_m, ref_m, kl_kind)
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))  # (B, T)

    rows = logprobs.shape[0] if num_rows is None else num_rows
    if loss_agg == "seq-mean-token-mean":
        loss = (per_token.sum(1) / mask.sum(1).clamp(min=1)).sum() / rows
    elif loss_agg == "token-mean":
        loss = per_token.sum() / (mask.sum().clamp(min=1) if num_tokens is None else num_tokens)
    else:
        loss = per_token.sum() / (max_len * rows)

    with torch.no_grad():
        high, low = high & mask, low & mask  # (B, T) each
        stats = {
            "clip_frac": masked_mean((high | low).float(), mask),
            "clip_frac_low": masked_mean(low.float(), mask),
            "clip_frac_high": masked_mean(high.float(), mask),
            "kl": masked_mean(kl, mask) if ref_logprobs is not None else torch.zeros((), device=mask.device),
            "ratio_mean": masked_mean(clipped_ratio, mask),
            "ratio_min": torch.where(mask, clipped_ratio, torch.full_like(clipped_ratio, float("inf"))).min(),
            "ratio_max": torch.where(mask, clipped_ratio, torch.zeros_like(clipped_ratio)).max(),
        }
    return loss, {k: v.detach().float() for k, v in stats.items()}


def policy_term(policy_loss, logprobs, log_ratio, ratio, adv, mask, eps_low, eps_high, gspo_eps):
    """The policy part of the loss per token (B, T), and what the stats need: the ratio that is clipped (B, T),
    and where the clip removed a gradient (or capped a weight) from above and from below (B, T) each. log_ratio
    and ratio (B, T) are per token, rho_t = pi / pi_old; adv (B, 1). On-policy (rho = 1) all three give the
    REINFORCE gradient -A grad log pi (gspo's under the per-sequence mean it implies); they differ off-policy:
      clip   l_t = -min(rho_t A, clip(rho_t, 1 - eps_low, 1 + eps_high) A)           PPO, GRPO
             A token that has moved far enough the way A wants loses its gradient: rho = 1.5, A > 0, eps 0.2 ->
             d l / d log pi = 0.
      gspo   l_t = -min(s A, clip(s, 1 - eps, 1 + eps) A),  s = exp(mean_t log rho_t)   GSPO, Zheng et al. 2025
             One ratio per sequence, the geometric mean of its tokens', clipped as a whole: the sequence loses its
             gradient only when its mean log-ratio leaves [log(1 - eps), log(1 + eps)]; inside, every token gets
             -A s / |o| (a per-sequence mean). Its eps is tiny (the paper's 3e-4 and 4e-4; ours 4e-4 both
             sides): a mean of log-ratios is far narrower than one token's.
      cispo  l_t = -sg(clip(rho_t, 1 - eps_low, 1 + eps_high)) A log pi_t               CISPO, MiniMax-M1 2025
             The ratio becomes a capped, stop-gradient weight: no token ever loses its gradient, its weight is
             only capped: rho = 1.5, A > 0 -> d l / d log pi = -1.2 A."""
    if policy_loss == "gspo":
        seq = torch.exp(log_ratio.sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1))  # (B, 1) s_i
        term = -torch.min(seq * adv, seq.clamp(1 - gspo_eps, 1 + gspo_eps) * adv).expand_as(log_ratio)  # (B, T)
        seq = seq.expand_as(log_ratio)  # (B, T)
        return term, seq, (adv > 0) & (seq > 1 + gspo_eps), (adv < 0) & (seq < 1 - gspo_eps)
    if policy_loss == "cispo":
        term = -ratio.clamp(1 - eps_low, 1 + eps_high).detach() * adv * logprobs  # (B, T)
        return term, ratio, ratio > 1 + eps_high, ratio < 1 - eps_low  # capped, whatever the sign of A
    term = -torch.min(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)  # (B, T)
    return term, ratio, (adv > 0) & (ratio > 1 + eps_high), (adv < 0) & (ratio < 1 - eps_low)


# ----------------------------------------------------------------------------- the same, without the logits

LOGITS_PER_CHUNK = 12_000_000  # chunk_size=None: K = this // V rows (238 for GPT-2: 48 MB buffers of logits)


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


def fused_token_logprobs(hidden, weight, targets, temperature=1.0, chunk_size=None, return_entropy=False):
    """token_logprobs' numbers without the (B, T, V) logits: same arguments, same results (to rounding).

    chunk_size: rows of the flattened B*T per forward chunk (None: LOGITS_PER_CHUNK // V); the backward's
    vocabulary blocks hold as many logits (chunk_size * V / (B*T) columns for all rows).
    Returns logprobs (B, T) float32, differentiable w.r.t. hidden and weight, and with return_entropy also
    the entropy of each position's distribution (B, T), without gradient, for logging."""
    B, T, C = hidden.shape
    chunk_size = chunk_size or max(1, LOGITS_PER_CHUNK // weight.shape[0])
    if B * T <= chunk_size:  # one chunk holds all the logits anyway: the plain computation is the same, faster
        return token_logprobs(hidden, weight, targets, temperature, return_entropy)
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    else:
        dtype = torch.promote_types(hidden.dtype, weight.dtype)
    logprobs, entropy = FusedTokenLogprobs.apply(hidden.reshape(B * T, C), weight, targets.reshape(B * T),
                                                 float(temperature), int(chunk_size), dtype, return_entropy)
    logprobs = logprobs.view(B, T)  # (B, T)
    return (logprobs, entropy.view(B, T)) if return_entropy else logprobs


if __name__ == "__main__":
    # One group of two responses: 4 tokens with advantage +1, 7 tokens with advantage -1. The gradient of the
    # loss with respect to each token's log-prob is -w_it A_i: what each aggregation pushes on every token.
    mask = torch.arange(7)[None, :] < torch.tensor([4, 7])[:, None]  # (2, 7)
    advantages = torch.tensor([1.0, -1.0])  # (2,)
    logprobs = torch.full((2, 7), -1.0, requires_grad=True)  # (2, 7)
    print("rows: 4 tokens with A = +1, 7 tokens with A = -1; on-policy (rho = 1)")
    for agg in LOSS_AGGS:
        loss, _ = grpo_loss(logprobs, logprobs.detach(), advantages, mask, loss_agg=agg, max_len=7)
        grad, = torch.autograd.grad(loss, logprobs)
        print(f"  {agg:20s} loss {loss.item():+.4f}   d loss / d logprob per token: short row "
              f"{grad[0, 0].item():+.4f}, long row {grad[1, 0].item():+.4f}")
    print("  (seq-mean-token-mean: 1/(2*4) = 0.125 against 1/(2*7) = 0.0714: the long wrong answer is punished less"
          " per token, Dr. GRPO's length bias)")
    old = logprobs.detach() - torch.log(torch.tensor([[1.5], [1.5]]))  # rho = 1.5 on every token
    loss, stats = grpo_loss(logprobs, old, advantages, mask)
    grad, = torch.autograd.grad(loss, logprobs)
    print(f"rho = 1.5 everywhere, clip_eps 0.2: short row (A > 0) gradient {grad[0, 0].item():+.4f} (clipped: it "
          f"went far enough), long row (A < 0) {grad[1, 0].item():+.4f}; clip_frac {stats['clip_frac'].item():.3f}")
    # The three policy losses on one worked example: a row of three tokens with ratios 1.5, 1/1.5 and 1 and A = +1,
    # and a one-token row with ratio 0.5 and A = -1 (its mirror). d loss / d log pi per token, seq-mean-token-mean.
    mask = torch.tensor([[True, True, True], [True, False, False]])  # (2, 3)
    logprobs = torch.zeros(2, 3, requires_grad=True)  # (2, 3)
    old = -torch.tensor([[1.5, 1 / 1.5, 1.0], [0.5, 1.0, 1.0]]).log()  # exp(logprobs - old) = the ratios
    print("\nthe policy losses, rows: ratios (1.5, 1/1.5, 1) with A = +1, and (0.5) with A = -1; eps 0.2, gspo 4e-4")
    for policy_loss in POLICY_LOSSES:
        loss, stats = grpo_loss(logprobs, old, torch.tensor([1.0, -1.0]), mask, policy_loss=policy_loss)
        grad, = torch.autograd.grad(loss, logprobs)
        print(f"  {policy_loss:5s}  row 1: {[round(g, 4) + 0.0 for g in grad[0].tolist()]}  row 2: "
              f"{round(grad[1, 0].item(), 4) + 0.0:+.4f}  clip_frac {stats['clip_frac'].item():.2f}")
    print("  clip: the 1.5 token went far enough, its gradient is gone; the 0.5 token too.\n"
          "  gspo: row 1's mean log-ratio is 0, so s = 1 and every token keeps -A s / (3 tokens x 2 rows); row 2's\n"
          "        s = 0.5 is out of range, gone.\n"
          "  cispo: nothing is gone; the weights are capped at 1.2 and 0.8.")
    # The KL term's gradient, exactly: every token y of a 6-token vocabulary weighed by pi(y) (float64, no
    # sampling), the gradient with respect to pi's logits z of sum_y sg(pi(y)) k(y), against the two KLs'.
    g = torch.Generator().manual_seed(0)
    z, z_ref = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    z.requires_grad_()
    logp, logp_ref = F.log_softmax(z, 0), F.log_softmax(z_ref, 0)  # (V,) each
    rows = [("grad KL(pi||ref)", (logp.exp() * (logp - logp_ref)).sum(), ""),
            ("grad KL(ref||pi)", (logp_ref.exp() * (logp_ref - logp)).sum(), "")]
    for kind, follows in zip(KL_KINDS, ("no pull at all, on average", "grad KL(pi||ref)",
                                        "grad KL(ref||pi), the reverse")):
        rows.append((f"{kind} in the loss", (logp.exp().detach() * kl_estimate(logp, logp_ref, kind)).sum(), follows))
    print("\nthe KL term's expected gradient w.r.t. pi's logits, 6 tokens, exact (Tang & Munos 2025):")
    torch.set_printoptions(precision=4, sci_mode=False)
    for name, value, follows in rows:
        grad, = torch.autograd.grad(value, z, retain_graph=True)
        grad = grad.numpy().round(4) + 0.0  # + 0.0 turns -0. into 0.
        print(f"  {name:18s} {grad}" + (f"   -> {follows}" if follows else ""))
