"""The GRPO loss against hand-written objectives and worked numbers; the fused log-prob gather against the plain one."""
import math
import re

import pytest
import torch
import torch.nn.functional as F

from advantage import group_advantages
from grpo import LOSS_AGGS, grpo_loss, kl_estimate, masked_mean, token_logprobs, fused_token_logprobs

AGGS = list(LOSS_AGGS)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def lengths_mask(lengths, T):
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)


def reinforce(logprobs, advantages, mask, agg, max_len):
    """-sum w A logp written out per mode, independently of grpo_loss: the REINFORCE-with-baseline objective."""
    B = logprobs.shape[0]
    terms = advantages[:, None] * logprobs * mask  # (B, T)
    if agg == "seq-mean-token-mean":
        return -sum(terms[i].sum() / mask[i].sum() for i in range(B)) / B
    if agg == "token-mean":
        return -terms.sum() / mask.sum()
    return -terms.sum() / (max_len * B)

# ---------------------------------------------------------------------------------------------- the loss


@pytest.mark.parametrize("agg", AGGS)
def test_on_policy_gradient_is_reinforce_with_baseline(agg):
    # the most-asked question: on-policy rho = 1, so why train on a loss that is ~0? Because its gradient is not.
    B, T, V = 8, 6, 11
    logits = torch.randn(B, T, V, generator=gen(0), requires_grad=True)  # (B, T, V)
    targets = torch.randint(0, V, (B, T), generator=gen(1))
    mask = lengths_mask([6, 2, 5, 3, 1, 6, 4, 2], T)
    adv = group_advantages(torch.tensor([1., 0, 0, 1, 1, 1, 0, 1]), 4)  # (B,) centred per group
    logprobs = F.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)  # (B, T)
    loss, stats = grpo_loss(logprobs, logprobs.detach(), adv, mask, loss_agg=agg, max_len=T)
    if agg == "seq-mean-token-mean":
        assert abs(loss.item()) < 1e-6  # every row weighs 1/B and the advantages are centred
    assert stats["ratio_mean"].item() == 1.0 and stats["clip_frac"].item() == 0.0
    grad, = torch.autograd.grad(loss, logits, retain_graph=True)
    expected, = torch.autograd.grad(reinforce(logprobs, adv, mask.float(), agg, T), logits)
    assert grad.abs().max() > 1e-3
    assert torch.allclose(grad, expected, atol=1e-7)


def clip_case(clip_eps_high=None):
    # rows: A = +1, +1, -1, -1; ratios chosen around the band [0.8, 1.2] (or [0.8, 1.28])
    ratio = torch.tensor([[1.5, 0.5, 1.1], [1.25, 1.0, 0.7], [0.5, 1.5, 0.9], [0.75, 1.3, 1.0]])
    adv = torch.tensor([1., 1, -1, -1])
    logprobs = torch.zeros(4, 3, requires_grad=True)
    old = -ratio.log()  # exp(logprobs - old) = ratio
    mask = torch.ones(4, 3, dtype=torch.bool)
    loss, stats = grpo_loss(logprobs, old, adv, mask, clip_eps=0.2, clip_eps_high=clip_eps_high,
                            loss_agg="token-mean")
    grad, = torch.autograd.grad(loss, logprobs)
    return ratio, adv, grad, stats, loss


def test_clip_removes_gradient_exactly_where_the_step_went_far_enough():
    ratio, adv, grad, stats, loss = clip_case()
    clipped = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]], dtype=torch.bool)
    assert (grad[clipped] == 0).all()
    # unclipped tokens keep the plain ratio gradient: d(-rho A / 12)/dlogp = -rho A / 12
    assert torch.allclose(grad[~clipped], (-ratio * adv[:, None] / 12)[~clipped])
    assert stats["clip_frac"].item() == pytest.approx(4 / 12)
    assert stats["clip_frac_high"].item() == pytest.approx(2 / 12)
    assert stats["clip_frac_low"].item() == pytest.approx(2 / 12)
    # A > 0 below the band (0.5, 0.7) and A < 0 above it (1.5, 1.3) are *not* clipped: min() keeps them
    assert grad[0, 1] != 0 and grad[2, 1] != 0


def test_clip_higher_widens_the_upper_side_only():
    ratio, adv, grad, stats, loss = clip_case(clip_eps_high=0.28)
    assert grad[1, 0] != 0  # rho = 1.25, A > 0: inside [0.8, 1.28] now
    assert grad[0, 0] == 0  # rho = 1.5 is still beyond 1.28
    assert grad[3, 0] == 0  # rho = 0.75, A < 0: the lower bound is still 1 - 0.2 (0.72 would keep it)
    assert stats["clip_frac"].item() == pytest.approx(3 / 12)
    # the clipped token's value is the constant (1 + eps_high) A
    per_token = -torch.min(ratio * adv[:, None], ratio.clamp(0.8, 1.28) * adv[:, None])
    assert per_token[0, 0] == pytest.approx(-1.28)
    assert loss.item() == pytest.approx(per_token.mean().item(), abs=1e-6)


def test_aggregation_weights_4_vs_7_tokens():
    # worked by hand: per-token gradient weights 1/|o_i| = 0.25 / 0.1429 (GRPO), 1/7 both (Dr. GRPO, max 7);
    # every mode also averages over the B = 2 rows, hence the factor B below.
    mask = lengths_mask([4, 7], 7)
    adv = torch.ones(2)
    weights = {}
    for agg in AGGS:
        logprobs = torch.zeros(2, 7, requires_grad=True)
        loss, _ = grpo_loss(logprobs, logprobs.detach(), adv, mask, loss_agg=agg, max_len=7)
        weights[agg], = torch.autograd.grad(-loss, logprobs)
    w = weights["seq-mean-token-mean"] * 2
    assert torch.allclose(w[0, :4], torch.tensor(0.25)) and torch.allclose(w[1], torch.tensor(1 / 7))
    assert (w[0, 4:] == 0).all()
    w = weights["seq-sum-constant"] * 2
    assert torch.allclose(w[mask], torch.tensor(1 / 7)) and (w[~mask] == 0).all()
    assert torch.allclose(weights["token-mean"][mask], torch.tensor(1 / 11))  # DAPO: every token alike


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("policy_loss", ["clip", "gspo", "cispo"])
def test_micro_batches_accumulate_to_the_full_batch(agg, policy_loss):
    B, T, C, V = 6, 5, 8, 13
    hidden = torch.randn(B, T, C, generator=gen(0), requires_grad=True)
    weight = torch.randn(V, C, generator=gen(1), requires_grad=True)
    targets = torch.randint(0, V, (B, T), generator=gen(2))
    mask = lengths_mask([5, 1, 3, 0, 4, 2], T)  # row 3 is empty: it must not divide by zero
    old = token_logprobs(hidden, weight, targets).detach() + 0.3 * torch.randn(B, T, generator=gen(3))
    ref = old + 0.2 * torch.randn(B, T, generator=gen(4))
    adv = torch.randn(B, generator=gen(5))
    kw = dict(clip_eps=0.2, clip_eps_high=0.28, kl_coef=0.1, loss_agg=agg, max_len=T, policy_loss=policy_loss,
              gspo_eps=0.05)

    full, _ = grpo_loss(token_logprobs(hidden, weight, targets), old, adv, mask, ref, **kw)
    full_grads = torch.autograd.grad(full, (hidden, weight))
    total, naive_total = 0.0, 0.0
    for s, e in [(0, 2), (2, 3), (3, 6)]:
        logprobs = fused_token_logprobs(hidden[s:e], weight, targets[s:e], chunk_size=4)  # the chunked path
        part, _ = grpo_loss(logprobs, old[s:e], adv[s:e], mask[s:e], ref[s:e], **kw,
                            num_rows=B, num_tokens=mask.sum())
        part.backward()  # gradients accumulate in .grad, as in a training loop
        total = total + part.item()
        naive_total += grpo_loss(logprobs, old[s:e], adv[s:e], mask[s:e], ref[s:e], **kw)[0].item()
    assert total == pytest.approx(full.item(), abs=1e-6)
    assert torch.allclose(hidden.grad, full_grads[0], atol=1e-6)
    assert torch.allclose(weight.grad, full_grads[1], atol=1e-6)
    assert abs(naive_total - full.item()) > 1e-3  # without the normalisers the pieces do not add up


def test_masked_tokens_contribute_nothing():
    B, T = 3, 5
    mask = lengths_mask([2, 5, 3], T)
    adv = torch.tensor([1.0, -0.5, 2.0])
    base = torch.randn(B, T, generator=gen(0))
    old, ref = base + 0.1, base - 0.1
    garbage = lambda x, v: torch.where(mask, x, torch.full_like(x, v))  # noqa: E731
    results = []
    for lp_fill, old_fill, ref_fill in [(None, None, None), (80.0, -80.0, float("nan"))]:
        logprobs = base.clone() if lp_fill is None else garbage(base, lp_fill)
        logprobs.requires_grad_()
        o = old if old_fill is None else garbage(old, old_fill)  # exp(80 + 80) = inf in float32
        r = ref if ref_fill is None else garbage(ref, ref_fill)
        loss, stats = grpo_loss(logprobs, o, adv, mask, r, kl_coef=0.1, loss_agg="token-mean")
        grad, = torch.autograd.grad(loss, logprobs)
        results.append((loss, grad, stats))
    (loss0, grad0, stats0), (loss1, grad1, stats1) = results
    assert torch.isfinite(loss1) and torch.isfinite(grad1).all()
    assert loss1.item() == loss0.item() and torch.equal(grad1, grad0)
    assert (grad1[~mask] == 0).all() and (grad1[mask] != 0).all()
    assert all(torch.equal(stats0[k], stats1[k]) for k in stats0)


def test_masked_targets_do_not_reach_the_weights_through_the_fused_gather():
    B, T, C, V = 2, 6, 8, 17
    hidden = torch.randn(B, T, C, generator=gen(0), requires_grad=True)
    weight = torch.randn(V, C, generator=gen(1), requires_grad=True)
    mask = lengths_mask([3, 4], T)
    grads = []
    for seed in (2, 3):  # different tokens in the padding
        targets = torch.where(mask, torch.arange(T).repeat(B, 1), torch.randint(0, V, (B, T), generator=gen(seed)))
        logprobs = fused_token_logprobs(hidden, weight, targets, chunk_size=5)
        loss, _ = grpo_loss(logprobs, logprobs.detach(), torch.tensor([1.0, -1.0]), mask)
        grads.append(torch.autograd.grad(loss, (hidden, weight)))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    assert (grads[0][0][~mask] == 0).all()


def test_stats_are_detached_scalars_over_unmasked_tokens():
    logprobs = torch.zeros(2, 3, requires_grad=True)
    old = -torch.tensor([[1.0, 2.0, 9.0], [0.5, 1.5, 1.0]]).log()  # ratios; the 9.0 is masked
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])  # {0, 1} ints work as a mask
    loss, stats = grpo_loss(logprobs, old, torch.tensor([1.0, -1.0]), mask, ref_logprobs=old)
    assert all(v.dim() == 0 and not v.requires_grad for v in stats.values())
    assert stats["ratio_mean"].item() == pytest.approx(6.0 / 5)
    assert stats["ratio_max"].item() == pytest.approx(2.0)
    # kl is k3 weighted by the ratio: per token r (1/r + log r - 1) = 1 + r log r - r, here with ref = old
    by_hand = sum(1 + r * math.log(r) - r for r in (1.0, 2.0, 0.5, 1.5, 1.0)) / 5  # 0.12958
    assert stats["kl"].item() == pytest.approx(by_hand, abs=1e-6)
    assert stats["kl"].item() > 0


def test_kl_terms_against_numbers_worked_by_hand():
    """One row of two tokens: pi = (1/2, 1/4) and pi_ref = (1/4, 1/2) on them, so u = log(pi_ref / pi) = (-ln 2, ln 2):
        k1 = -u          = ( 0.6931, -0.6931)   mean 0
        k2 = u^2 / 2     = ( 0.2402,  0.2402)   mean 0.2402
        k3 = e^u - u - 1 = ( 0.1931,  0.3069)   mean 0.25
    and d k3 / d logp = 1 - e^u = (0.5, -1): k3 pulls log pi down where pi > pi_ref, up where it is below."""
    logprobs = torch.tensor([[0.5, 0.25]]).log().requires_grad_()  # (1, 2)
    ref = torch.tensor([[0.25, 0.5]]).log()
    mask, zero_adv = torch.ones(1, 2, dtype=torch.bool), torch.zeros(1)
    ln2 = math.log(2)
    by_hand = {"k1": (0.0, [1.0, 1.0]), "k2": (ln2 ** 2 / 2, [ln2, -ln2]), "k3": (0.25, [0.5, -1.0])}  # value, d/dlogp
    for kind, (value, grad) in by_hand.items():
        loss, stats = grpo_loss(logprobs, logprobs.detach(), zero_adv, mask, ref, kl_coef=0.04, kl_kind=kind)
        assert loss.item() == pytest.approx(0.04 * value, abs=1e-7)  # seq-mean-token-mean: the row's mean
        g, = torch.autograd.grad(loss, logprobs)
        torch.testing.assert_close(g, 0.04 * torch.tensor([grad]) / 2, atol=1e-7, rtol=0)
        assert stats["kl"].item() == pytest.approx(0.25, abs=1e-7)  # the log is k3's, whatever the loss uses
    plain, _ = grpo_loss(logprobs, logprobs.detach(), torch.ones(1), mask, ref)
    with_kl, _ = grpo_loss(logprobs, logprobs.detach(), torch.ones(1), mask, ref, kl_coef=0.04)
    assert (with_kl - plain).item() == pytest.approx(0.01, abs=1e-7)  # added to the policy term


def test_loss_errors():
    x, m, a = torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2)
    with pytest.raises(ValueError, match="token-sum"):
        grpo_loss(x, x, a, m, loss_agg="token-sum")
    with pytest.raises(ValueError, match="max_len"):
        grpo_loss(x, x, a, m, loss_agg="seq-sum-constant")
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(x, x, a, m, kl_coef=0.1)
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(x, x, "k4")


@pytest.mark.parametrize("shape", [(2, 1), (1,), (3,), ()])
def test_advantages_must_be_one_per_row(shape):
    """A (B, 1) advantage would broadcast against (B, T) to (B, B, T): a wrong loss and gradient, silently."""
    x, m = torch.zeros(2, 3, requires_grad=True), torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"advantages must have shape \(B,\) = \(2,\)"):
        grpo_loss(x, x.detach(), torch.zeros(shape), m)


def test_masked_mean():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, float("nan"), 5.0]])
    mask = torch.tensor([[True, True, False], [True, False, True]])
    assert masked_mean(x, mask).item() == pytest.approx(11 / 4)
    assert torch.allclose(masked_mean(x, mask, dim=1), torch.tensor([1.5, 4.0]))
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0

# ---------------------------------------------------------------------------------------------- KL estimators


def test_kl_estimators_match_exact_kl_and_its_direction():
    n = 400_000
    logp = torch.log_softmax(torch.tensor([3.0, 1.0, 0.5, 0.0, -1.0, -3.0]), 0)  # pi
    logq = torch.log_softmax(torch.tensor([-1.0, 0.0, 0.5, 1.0, 1.5, 0.5]), 0)  # pi_ref
    kl_fwd = (logp.exp() * (logp - logq)).sum().item()  # KL(pi || pi_ref) = 2.350
    kl_rev = (logq.exp() * (logq - logp)).sum().item()  # KL(pi_ref || pi) = 2.231
    assert abs(kl_fwd - kl_rev) > 0.1  # a case where the direction matters
    # exact expectations under pi: sum_v pi_v k(v)
    for kind in ("k1", "k3"):
        assert (logp.exp() * kl_estimate(logp, logq, kind)).sum().item() == pytest.approx(kl_fwd, rel=1e-5)
    y = torch.multinomial(logp.exp(), n, replacement=True, generator=gen(0))  # samples from pi
    for kind in ("k1", "k3"):
        k = kl_estimate(logp[y], logq[y], kind)  # (n,)
        se = k.std().item() / math.sqrt(n)
        assert abs(k.mean().item() - kl_fwd) < 4 * se
        assert abs(k.mean().item() - kl_rev) > 8 * se  # k1: ~45 se away, k3: ~20
    k1 = kl_estimate(logp[y], logq[y], "k1")
    assert (k1 < 0).any()  # unbiased but can be negative per token
    k2 = kl_estimate(logp[y], logq[y], "k2")
    assert torch.allclose(k2, 0.5 * (logq[y] - logp[y]) ** 2)


def test_k3_is_never_negative():
    u = torch.cat([torch.randn(10000, generator=gen(0)) * s for s in (1e-6, 1e-3, 1.0, 10.0)])
    k3 = kl_estimate(torch.zeros_like(u), u, "k3")
    assert (k3 >= 0).all() and torch.isfinite(k3).all()
    exact = u.double().exp() - u.double() - 1  # ~u^2 / 2 for small u, which float32 e^u - u - 1 would lose
    assert torch.allclose(k3.double(), exact, rtol=1e-4, atol=1e-9)

# ---------------------------------------------------------------------------------------------- fused gather


def inputs(B=3, T=5, C=16, V=37, dtype=torch.float32, seed=0, scale=0.5):
    hidden = torch.randn(B, T, C, generator=gen(seed)).to(dtype).requires_grad_()
    weight = (scale * torch.randn(V, C, generator=gen(seed + 1))).to(dtype).requires_grad_()
    targets = torch.randint(0, V, (B, T), generator=gen(seed + 2))
    grad_out = torch.randn(B, T, generator=gen(seed + 3))
    return hidden, weight, targets, grad_out


# 4 and 7 divide neither B*T = 15 rows nor, as backward blocks of 9 and 17 columns, V = 37; 15 is one chunk
@pytest.mark.parametrize("chunk_size", [1, 4, 7, 14, 15])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_fused_matches_naive_float32(chunk_size, temperature):
    hidden, weight, targets, grad_out = inputs()
    fused = fused_token_logprobs(hidden, weight, targets, temperature, chunk_size)
    naive = token_logprobs(hidden, weight, targets, temperature)
    assert fused.shape == (3, 5) and fused.dtype == torch.float32
    assert torch.allclose(fused, naive, atol=1e-5)
    g_fused = torch.autograd.grad(fused, (hidden, weight), grad_out)
    g_naive = torch.autograd.grad(naive, (hidden, weight), grad_out)
    for a, b in zip(g_fused, g_naive):
        assert torch.allclose(a, b, atol=1e-5)


def test_one_chunk_is_the_plain_computation():
    """When every row fits in one chunk the fused path is token_logprobs itself (the default CPU model's case)."""
    hidden, weight, targets, _ = inputs()  # 15 rows
    one = fused_token_logprobs(hidden, weight, targets, 0.7, chunk_size=15, return_entropy=True)
    plain = token_logprobs(hidden, weight, targets, 0.7, return_entropy=True)
    assert all(torch.equal(a, b) for a, b in zip(one, plain))
    fn_names = lambda t: {type(f).__name__ for f in [t.grad_fn] + [n for n, _ in t.grad_fn.next_functions]}
    assert not any("Fused" in n for n in fn_names(one[0]))
    assert any("Fused" in n for n in fn_names(fused_token_logprobs(hidden, weight, targets, chunk_size=14)))


def test_temperature_changes_the_distribution():
    hidden, weight, targets, _ = inputs()
    t1 = fused_token_logprobs(hidden, weight, targets, 1.0, chunk_size=4)
    t2 = fused_token_logprobs(hidden, weight, targets, 2.0, chunk_size=4)
    assert torch.allclose(t2, fused_token_logprobs(hidden / 2, weight, targets, 1.0, chunk_size=4), atol=1e-6)
    assert (t1 - t2).abs().max() > 0.1


def test_gradcheck_float64():
    hidden, weight, targets, _ = inputs(B=2, T=3, C=4, V=5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda h, w: fused_token_logprobs(h, w, targets, 0.9, chunk_size=4), (hidden, weight))


def test_only_hidden_needs_grad():
    hidden, weight, targets, grad_out = inputs()
    weight.requires_grad_(False)
    g, = torch.autograd.grad(fused_token_logprobs(hidden, weight, targets, chunk_size=4), hidden, grad_out)
    g_naive, = torch.autograd.grad(token_logprobs(hidden, weight, targets), hidden, grad_out)
    assert torch.allclose(g, g_naive, atol=1e-5)


def test_entropy_from_the_same_pass():
    hidden, weight, targets, _ = inputs()
    logprobs, entropy = fused_token_logprobs(hidden, weight, targets, 0.8, chunk_size=4, return_entropy=True)
    logp_all = F.log_softmax(hidden @ weight.t() / 0.8, -1)  # (B, T, V)
    assert torch.allclose(entropy, -(logp_all.exp() * logp_all).sum(-1), atol=1e-5)
    assert not entropy.requires_grad
    assert torch.equal(logprobs, fused_token_logprobs(hidden, weight, targets, 0.8, chunk_size=4))


def test_fused_never_saves_full_logits():
    B, T, V = 4, 8, 50
    hidden, weight, targets, _ = inputs(B=B, T=T, V=V)
    for fn, expect_full in [(lambda *a: fused_token_logprobs(*a, chunk_size=8), False), (token_logprobs, True)]:
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            fn(hidden, weight, targets)
        assert (max(sizes) >= B * T * V) == expect_full


def test_bfloat16_autocast_within_stated_tolerance():
    # bf16 rounds the logits (8 bits of mantissa): we allow 0.05 in log-prob (logits here are of size ~3)
    # and 2% relative error in the gradients, against the float32 path; and fused ~ naive under the same autocast.
    hidden, weight, targets, grad_out = inputs(C=64, V=101, scale=0.3)
    ref = token_logprobs(hidden, weight, targets, 0.8)
    ref_grads = torch.autograd.grad(ref, (hidden, weight), grad_out)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = fused_token_logprobs(hidden, weight, targets, 0.8, chunk_size=4)
        naive = token_logprobs(hidden, weight, targets, 0.8)
    assert fused.dtype == torch.float32
    assert (fused - ref).abs().max() < 0.05 and (fused - naive).abs().max() < 0.02
    grads = torch.autograd.grad(fused, (hidden, weight), grad_out)
    for g, r in zip(grads, ref_grads):
        assert g.dtype == r.dtype == torch.float32
        assert (g - r).norm() / r.norm() < 0.02


def test_bfloat16_tensors_and_a_confident_model():
    # pure bf16 parameters, and targets the model is nearly sure of (p_y ~ 0.99): 1 - p_y must not be lost
    hidden, weight, targets, grad_out = inputs(C=32, V=50, scale=0.1)
    with torch.no_grad():  # raise the target's logit at position (0, 0) by 8
        weight[targets[0, 0]] += 8 * hidden[0, 0] / hidden[0, 0].norm() ** 2
    h16, w16 = (x.detach().bfloat16().requires_grad_() for x in (hidden, weight))
    fused = fused_token_logprobs(h16, w16, targets, chunk_size=4)
    ref = token_logprobs(h16.double(), w16.double(), targets)  # exact maths on the same bf16 inputs
    assert fused.dtype == torch.float32 and ref[0, 0].exp() > 0.98
    assert (fused - ref).abs().max() < 0.05
    grads = torch.autograd.grad(fused, (h16, w16), grad_out, retain_graph=True)
    ref_grads = torch.autograd.grad(ref, (h16, w16), grad_out.double(), retain_graph=True)
    for g, r in zip(grads, ref_grads):
        assert g.dtype == torch.bfloat16
        assert (g.double() - r).norm() / r.norm() < 0.02
    one = torch.autograd.grad(fused[0, 0], h16)[0][0, 0].double()  # the confident token alone
    one_ref = torch.autograd.grad(ref[0, 0], h16)[0][0, 0]
    assert (one - one_ref).norm() / one_ref.norm() < 0.05


# ------------------------------------------------------------------- the KL term's gradient, by exact enumeration
def kl_enumeration():
    """A 6-token categorical pi and a reference, as logits in float64 (the worked table `python grpo.py` prints)."""
    g = gen(0)
    return torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)


def exact_grads(z, z_ref, kind, sampler=None):
    """d/dz of sum_y sg(q(y)) w(y) k(y): the expected gradient of the loss term k on tokens y drawn from q, with
    every y weighed by its probability (no sampling). q is pi itself (sampler None), or another policy whose
    tokens grpo_loss sees as old_logprobs. Returns (that gradient, grad KL(pi||ref), grad KL(ref||pi))."""
    z = z.clone().requires_grad_()
    logp, logp_ref = F.log_softmax(z, 0), F.log_softmax(z_ref, 0)  # (V,) each
    old = logp.detach() if sampler is None else F.log_softmax(sampler, 0)  # (V,)
    # one row per token y, one token per row: grpo_loss with A = 0 and kl_coef = 1 is the KL term alone
    rows = [grpo_loss(logp[y].view(1, 1), old[y].view(1, 1), torch.zeros(1, dtype=torch.float64),
                      torch.ones(1, 1, dtype=torch.bool), logp_ref[y].view(1, 1), kl_coef=1.0, kl_kind=kind)[0]
            for y in range(6)]
    expected = sum(old[y].exp() * rows[y] for y in range(6))
    kl_forward = (logp.exp() * (logp - logp_ref)).sum()
    kl_reverse = (logp_ref.exp() * (logp_ref - logp)).sum()
    return [torch.autograd.grad(f, z, retain_graph=True)[0] for f in (expected, kl_forward, kl_reverse)]


def test_kl_estimators_in_the_loss_follow_these_gradients_by_exact_enumeration():
    """An unbiased value is not an unbiased gradient (Tang & Munos 2025). On tokens drawn from pi, in expectation:
    k1 in the loss pulls nowhere, k2 follows grad KL(pi || ref), k3 follows grad KL(ref || pi), the reverse."""
    z, z_ref = kl_enumeration()
    k1, forward, reverse = exact_grads(z, z_ref, "k1")
    k2, k3 = exact_grads(z, z_ref, "k2")[0], exact_grads(z, z_ref, "k3")[0]
    torch.testing.assert_close(forward, torch.tensor([0.2633, -0.1727, -0.0309, 0.0624, -0.0507, -0.0713],
                                                     dtype=torch.float64), atol=1e-4, rtol=0)  # the table
    torch.testing.assert_close(reverse, torch.tensor([0.3697, -0.2497, -0.0582, 0.1246, -0.0391, -0.1473],
                                                     dtype=torch.float64), atol=1e-4, rtol=0)
    assert k1.abs().max() < 1e-12  # E_pi[grad log pi] = 0: k1 has no pull at all
    torch.testing.assert_close(k2, forward, atol=1e-12, rtol=0)
    torch.testing.assert_close(k3, reverse, atol=1e-12, rtol=0)
    # the two directions differ here, so a swapped direction or sign cannot pass
    assert (forward - reverse).abs().max() > 0.05 and (k3 + reverse).abs().max() > 0.5


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_kl_term_on_another_policys_tokens_is_importance_weighted(kind):
    """With updates_per_batch > 1 (or stale samples) the tokens come from pi_old, not pi: weighted by the detached
    ratio pi / pi_old, the KL term's expected gradient is still the one it has on pi's own tokens."""
    z, z_ref = kl_enumeration()
    sampler = z + 0.7 * torch.randn(6, generator=gen(5), dtype=torch.float64)  # pi_old, far from pi
    on_policy = exact_grads(z, z_ref, kind)[0]
    off_policy = exact_grads(z, z_ref, kind, sampler=sampler)[0]
    torch.testing.assert_close(off_policy, on_policy, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_the_logged_kl_estimates_kl_pi_ref_whatever_the_loss_uses(kind):
    """stats['kl'] is k3's value (unbiased for KL(pi || ref), >= 0) on every kl_kind, importance-weighted like the
    loss term when the tokens come from pi_old: over all tokens weighed by pi_old it is exactly KL(pi || ref)."""
    z, z_ref = kl_enumeration()
    sampler = z + 0.7 * torch.randn(6, generator=gen(5), dtype=torch.float64)
    logp, logp_ref, old = (F.log_softmax(t, 0) for t in (z, z_ref, sampler))
    kls = torch.stack([grpo_loss(logp[y].view(1, 1), old[y].view(1, 1), torch.zeros(1, dtype=torch.float64),
                                 torch.ones(1, 1, dtype=torch.bool), logp_ref[y].view(1, 1), kl_coef=0.1,
                                 kl_kind=kind)[1]["kl"] for y in range(6)])  # (V,)
    exact = (logp.exp() * (logp - logp_ref)).sum()
    assert (old.exp() * kls.double()).sum().item() == pytest.approx(exact.item(), rel=1e-5)
    assert (kls >= 0).all()


def test_python_grpo_py_prints_the_kl_gradient_table(capsys):
    import runpy
    runpy.run_path("grpo.py", run_name="__main__")  # `python grpo.py`, in this process
    out = capsys.readouterr().out
    row = lambda name: [float(x) for x in re.findall(r"-?[0-9]+\.[0-9]*", next(
        line for line in out.splitlines() if line.strip().startswith(name)))]
    forward, reverse = row("grad KL(pi||ref)"), row("grad KL(ref||pi)")
    assert forward[0] == 0.2633 and reverse[0] == 0.3697 and len(forward) == len(reverse) == 6
    assert row("k1 in the loss") == [0.0] * 6 and row("k2 in the loss") == forward and row("k3 in the loss") == reverse


# ------------------------------------------------------------------- after the clip: GSPO and CISPO
POLICY_LOSSES = ("clip", "gspo", "cispo")


def slow_policy_loss(logprobs, old_logprobs, advantages, mask, policy_loss, agg, eps=0.2, gspo_eps=4e-4, max_len=7):
    """Each loss written out token by token with Python loops over scalars: the obvious reference."""
    B, T = logprobs.shape
    rows = []
    for i in range(B):
        tokens = [t for t in range(T) if mask[i, t]]
        A = advantages[i]
        terms = []
        if policy_loss == "gspo":
            s = torch.exp(sum(logprobs[i, t] - old_logprobs[i, t] for t in tokens) / len(tokens))
            clipped = torch.clamp(s, 1 - gspo_eps, 1 + gspo_eps)
            terms = [-torch.min(s * A, clipped * A) for _ in tokens]
        for t in tokens if policy_loss != "gspo" else ():
            rho = torch.exp(logprobs[i, t] - old_logprobs[i, t])
            if policy_loss == "clip":
                terms.append(-torch.min(rho * A, torch.clamp(rho, 1 - eps, 1 + eps) * A))
            else:
                terms.append(-torch.clamp(rho, 1 - eps, 1 + eps).detach() * A * logprobs[i, t])
        rows.append(terms)
    if agg == "seq-mean-token-mean":
        return sum(sum(r) / len(r) for r in rows) / B
    if agg == "token-mean":
        return sum(sum(r) for r in rows) / sum(len(r) for r in rows)
    return sum(sum(r) for r in rows) / (max_len * B)


@pytest.mark.parametrize("policy_loss", POLICY_LOSSES)
@pytest.mark.parametrize("agg", AGGS)
def test_each_policy_loss_matches_its_slow_per_token_loop_off_policy(policy_loss, agg):
    B, T = 4, 7
    logprobs = (-torch.rand(B, T, generator=gen(0), dtype=torch.float64) * 3).requires_grad_()
    old = logprobs.detach() + 0.4 * torch.randn(B, T, generator=gen(1), dtype=torch.float64)  # off-policy
    old[1] = logprobs[1].detach() + 1e-4 * torch.randn(T, generator=gen(2), dtype=torch.float64)  # one row near 1
    adv = torch.tensor([1.0, -0.5, -1.0, 2.0], dtype=torch.float64)
    mask = lengths_mask([7, 3, 5, 1], T)
    loss, stats = grpo_loss(logprobs, old, adv, mask, loss_agg=agg, max_len=T, policy_loss=policy_loss)
    expected = slow_policy_loss(logprobs, old, adv, mask, policy_loss, agg)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)
    g, = torch.autograd.grad(loss, logprobs)
    g_ref, = torch.autograd.grad(expected, logprobs)
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=1e-10)
    assert 0 < stats["clip_frac"] < 1  # the off-policy rows are clipped somewhere, the near-on-policy one not


@pytest.mark.parametrize("policy_loss", POLICY_LOSSES)
def test_on_policy_each_loss_is_reinforce_with_baseline(policy_loss):
    """At rho = 1: clip and cispo under every aggregation, gspo under the per-sequence mean it implies."""
    B, T, V = 8, 6, 11
    logits = torch.randn(B, T, V, generator=gen(0), dtype=torch.float64, requires_grad=True)  # (B, T, V)
    targets = torch.randint(0, V, (B, T), generator=gen(1))
    mask = lengths_mask([6, 2, 5, 3, 1, 6, 4, 2], T)
    adv = group_advantages(torch.tensor([1., 0, 0, 1, 1, 1, 0, 1]), 4).double()  # (B,)
    logprobs = F.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)  # (B, T)
    for agg in AGGS if policy_loss != "gspo" else ["seq-mean-token-mean"]:
        loss, stats = grpo_loss(logprobs, logprobs.detach(), adv, mask, loss_agg=agg, max_len=T,
                                policy_loss=policy_loss)
        grad, = torch.autograd.grad(loss, logits, retain_graph=True)
        expected, = torch.autograd.grad(reinforce(logprobs, adv, mask.double(), agg, T), logits, retain_graph=True)
        assert grad.abs().max() > 1e-3 and stats["clip_frac"] == 0 and stats["ratio_max"] == 1.0
        torch.testing.assert_close(grad, expected, atol=1e-12, rtol=1e-10)


def one_token(rho, A, policy_loss):
    """d loss / d log pi of one token whose ratio is rho, advantage A, eps 0.2 (gspo: its own 4e-4)."""
    logprobs = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    old = -torch.tensor([[rho]], dtype=torch.float64).log()  # exp(logprobs - old) = rho
    loss, stats = grpo_loss(logprobs, old, torch.tensor([A], dtype=torch.float64), torch.ones(1, 1, dtype=torch.bool),
                            policy_loss=policy_loss)
    return torch.autograd.grad(loss, logprobs)[0].item(), stats["clip_frac"].item()


def test_worked_numbers_for_one_token_and_its_mirror():
    # rho = 1.5, A = +1: the token has moved far enough the way A wants
    assert one_token(1.5, 1.0, "clip") == (0.0, 1.0)  # PPO's clip: no gradient
    assert one_token(1.5, 1.0, "cispo") == (pytest.approx(-1.2), 1.0)  # CISPO: the weight capped at 1 + 0.2
    assert one_token(1.5, 1.0, "gspo") == (0.0, 1.0)  # GSPO: the sequence (one token) is out of its range
    # the mirror: rho = 0.5, A = -1
    assert one_token(0.5, -1.0, "clip") == (0.0, 1.0)
    assert one_token(0.5, -1.0, "cispo") == (pytest.approx(0.8), 1.0)  # capped at 1 - 0.2, pushed down still
    assert one_token(0.5, -1.0, "gspo") == (0.0, 1.0)
    # inside the range every loss is REINFORCE's -A rho (cispo: -A rho as a weight)
    assert one_token(1.1, 1.0, "clip")[0] == pytest.approx(-1.1) and one_token(1.1, 1.0, "cispo")[0] == pytest.approx(-1.1)


def test_gspo_clips_a_sequence_only_when_its_mean_log_ratio_leaves_the_range():
    """Tokens with ratios 1.5, 1/1.5 and 1: the token clip removes the first one's gradient, but the sequence's
    mean log-ratio is 0, s = 1, so GSPO keeps every token, each with -A s / 3."""
    logprobs = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    old = -torch.tensor([[1.5, 1 / 1.5, 1.0]], dtype=torch.float64).log()
    mask, A = torch.ones(1, 3, dtype=torch.bool), torch.tensor([1.0], dtype=torch.float64)
    gspo, = torch.autograd.grad(grpo_loss(logprobs, old, A, mask, policy_loss="gspo")[0], logprobs)
    clip, = torch.autograd.grad(grpo_loss(logprobs, old, A, mask, policy_loss="clip")[0], logprobs)
    torch.testing.assert_close(gspo, torch.full((1, 3), -1 / 3, dtype=torch.float64))
    assert clip[0, 0] == 0 and clip[0, 1] != 0
    shifted = old - 0.01  # every token's log-ratio up by 0.01: s = e^0.01 > 1 + 4e-4
    gone, = torch.autograd.grad(grpo_loss(logprobs, shifted, A, mask, policy_loss="gspo")[0], logprobs)
    assert (gone == 0).all()


def test_an_unknown_policy_loss_is_refused():
    x, m, a = torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2)
    with pytest.raises(ValueError, match="policy_loss"):
        grpo_loss(x, x, a, m, policy_loss="ppo2")
