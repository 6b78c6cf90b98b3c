"""
advantage.py: turn the verifier's rewards into advantages, one group of G completions per prompt at a time.

The idea: GRPO has no value network; the baseline for a completion is the mean reward of its group (the G samples
of the same prompt), so a completion is pushed up exactly when it did better than its siblings. Groups whose rewards
are all equal (too easy, too hard) carry no signal at all, and `group_stats` measures how much of a batch that is.

The equations, for one group r_1..r_G with mean mu (REINFORCE: grad J = E[A grad log pi(y|x)]):
    grpo     A_i = (r_i - mu) / sigma      sigma = sqrt(var + eps), var = sum_j (r_j - mu)^2 / (G or G-1)
    drgrpo   A_i = r_i - mu                (Dr. GRPO: dividing by sigma up-weights the too-easy / too-hard groups)
    rloo     A_i = r_i - mean_{j != i} r_j = G/(G-1) (r_i - mu)   (leave-one-out: the baseline ignores y_i, so the
                                                                   gradient stays exactly unbiased)
    none     A_i = r_i                     (vanilla REINFORCE, no baseline)
Any baseline b that does not depend on y_i leaves the gradient unbiased, because E[grad log pi] = grad sum pi = 0;
the group mean depends on y_i a little (weight 1/G), which is the bias RLOO removes.
Worked numbers: r = [1,0,1,0,0,1,0,0], population sigma -> A = +1.291 / -0.7746;
r = [1,0,1,0], Bessel sigma -> A = +-0.866. With pass rate p, a share p^G + (1-p)^G of groups is all-equal.

Choices, and how this differs from the papers:
 1. eps enters *inside* the square root for both sigma conventions, sigma = sqrt(var + eps): it keeps sigma >=
    sqrt(eps) > 0 without a branch and moves the worked numbers only in the 4th decimal (+1.2907, +0.8659).
    (DeepSeekMath writes (r - mean) / std; some implementations add eps outside the root instead: both agree
    with the worked numbers above to 1e-3.)
 2. A group whose rewards are all equal gets advantages of exactly 0 for every centred method (we set them, so
    that float rounding of the mean, e.g. of [0.9, 0.9, 0.9], cannot leak a tiny signal).
 3. Shaping (a format bonus, Kimi k1.5's length reward) is not added to the reward before the group statistics:
    `shaped_advantages` centres it on its own and adds it to the verifier's advantages, undivided by sigma.
    Inside the reward, a group whose answers are all right would have only the shaping's spread left, and the
    sigma division would blow any weight up to full scale (a 1% length weight pushing as hard as correctness).
    Kimi itself uses r - mean, with no sigma; GDPO normalises each reward on its own. The length reward's weight
    can be 0 early and switched on later; max_len == min_len gives 0 instead of 0/0.
 4. group_stats reads passes from correctness and "no signal" from the advantages themselves, never from the
    reward's size: a format bonus can lift a wrong answer's reward, and shaping can give an all-right group a push.

Run: `python advantage.py` prints the worked numbers. Shapes: P prompts, G group size, B = P*G rows.
"""
import torch

METHODS = ("grpo", "drgrpo", "rloo", "none")


def _groups(x, group_size):
    """(B,) -> (P, G), the G completions of a prompt being consecutive rows."""
    if x.dim() != 1 or group_size < 1 or x.numel() % group_size != 0:
        raise ValueError(f"expected a 1-d tensor whose length is a multiple of group_size={group_size}, "
                         f"got shape {tuple(x.shape)}")
    return x.view(-1, group_size)  # (P, G)


def group_advantages(rewards, group_size, method="grpo", eps=1e-4, unbiased_std=False):
    """rewards (B,) with each prompt's G completions consecutive -> advantages (B,) float.
    method: grpo (z-score in the group), drgrpo (mean baseline only), rloo (leave-one-out mean), none (the raw
    rewards); eps and unbiased_std: grpo's sigma = sqrt(var + eps), var over G (or G - 1 with unbiased_std).
    A group whose rewards are all equal gets exactly 0 from every method but none."""
    if method not in METHODS:
        raise ValueError(f"unknown advantage method {method!r}; choose one of {METHODS}")
    r = _groups(rewards.float(), group_size)  # (P, G)
    G = group_size
    if method == "none":
        return r.flatten().clone()  # (B,)
    mean = r.mean(dim=1, keepdim=True)  # (P, 1)
    if method == "grpo":
        var = (r - mean).pow(2).sum(dim=1, keepdim=True) / max(G - 1 if unbiased_std else G, 1)  # (P, 1)
        adv = (r - mean) / torch.sqrt(var + eps)  # (P, G)
    elif method == "drgrpo":
        adv = r - mean  # (P, G)
    else:  # rloo
        if G < 2:
            raise ValueError("rloo needs group_size >= 2: the baseline is the mean of the other G - 1 rewards")
        baseline = (r.sum(dim=1, keepdim=True) - r) / (G - 1)  # (P, G) mean of the others
        adv = r - baseline  # (P, G)
    all_equal = (r == r[:, :1]).all(dim=1, keepdim=True)  # (P, 1)
    return adv.masked_fill(all_equal, 0.0).flatten()  # (B,)


def shaped_advantages(rewards, shaping, group_size, method="grpo", eps=1e-4, unbiased_std=False):
    """The verifier's rewards (B,) turned into group advantages, plus a shaping term (B,) (a format bonus, Kimi's
    length reward, already multiplied by its weight) centred on its own and never divided by sigma:
        A_i = group_advantages(r)_i + (s_i - mean_group(s))    (rloo: the leave-one-out mean; none: + s_i).
    Why not group_advantages(r + s): in a group whose answers are all right (or all wrong) the only spread left
    is the shaping's, and GRPO's sigma would blow a 1% weight up to full scale (lengths 10/20/30/40 at w = 0.01:
    +-0.47). Here a weight w moves the advantages by O(w), and the correctness signal dominates a mixed group.
    (GDPO normalises each reward separately, for the same reason.)"""
    baseline = "drgrpo" if method == "grpo" else method  # the same baseline, without the division by sigma
    return group_advantages(rewards, group_size, method, eps, unbiased_std) + group_advantages(shaping, group_size,
                                                                                               baseline)


def length_rewards(lengths, correct, group_size):
    """Kimi k1.5's group length reward, to be added as rewards + weight * length_rewards(...).

    lengths (B,) response lengths in tokens, correct (B,) bool. Per group,
    lam_i = 0.5 - (len_i - min_len) / (max_len - min_len) in [-0.5, 0.5]: the shortest response gets +0.5,
    the longest -0.5. Correct responses get lam_i; wrong ones min(0, lam_i), so being short never pays when
    the answer is wrong, but rambling is still penalised. A group of equal lengths gets 0. Returns (B,) float."""
    n = _groups(lengths.float(), group_size)  # (P, G)
    ok = _groups(correct.bool(), group_size)  # (P, G)
    lo = n.min(dim=1, keepdim=True).values  # (P, 1)
    span = n.max(dim=1, keepdim=True).values - lo  # (P, 1)
    lam = 0.5 - (n - lo) / span.clamp(min=1e-8)  # (P, G)
    lam = torch.where(span > 0, lam, torch.zeros_like(lam))
    return torch.where(ok, lam, lam.clamp(max=0.0)).flatten()  # (B,)


def has_signal(advantages, group_size):
    """(P,) bool: which groups carry a signal, an advantage that is not 0. The others add nothing to the gradient:
    under the centred methods, the groups whose rewards (and shaping) are all equal."""
    return (_groups(advantages, group_size) != 0).any(dim=1)


def group_stats(correct, advantages, group_size):
    """Logging numbers for one batch: plain Python floats. correct (B,) bool, advantages (B,).

    zero_signal: share of groups whose advantages are all 0, so they add nothing to the gradient (under the
    centred methods, the groups whose rewards are all equal); zero_signal_pred: p^G + (1 - p)^G, the share of
    all-right or all-wrong groups if every prompt had the batch's pass rate p (a lower bound in expectation when
    prompts differ in difficulty, since p^G + (1-p)^G is convex in p); all_pass_frac / all_fail_frac: the two
    kinds; pass_rate: the share of correct responses (never read off the reward, which a bonus can inflate)."""
    passed = _groups(correct.bool(), group_size)  # (P, G)
    p = passed.float().mean().item()
    G = group_size
    return {
        "pass_rate": p,
        "zero_signal": (~has_signal(advantages, group_size)).float().mean().item(),
        "zero_signal_pred": p ** G + (1 - p) ** G,
        "all_pass_frac": passed.all(dim=1).float().mean().item(),
        "all_fail_frac": (~passed).all(dim=1).float().mean().item(),
    }


if __name__ == "__main__":
    torch.set_printoptions(precision=4, sci_mode=False)
    r8 = torch.tensor([1., 0, 1, 0, 0, 1, 0, 0])
    print("r = [1,0,1,0,0,1,0,0]")
    print("  grpo, population sigma  ", group_advantages(r8, 8))
    print("  same with eps = 0       ", group_advantages(r8, 8, eps=0.0), "(by hand: +1.291 / -0.7746)")
    r4 = torch.tensor([1., 0, 1, 0])
    print("r = [1,0,1,0]")
    print("  grpo, Bessel sigma      ", group_advantages(r4, 4, unbiased_std=True), "(by hand: +-0.866)")
    print("  mean baseline (drgrpo)  ", group_advantages(r4, 4, "drgrpo"), "(by hand: +-0.5)")
    print("  leave-one-out (rloo)    ", group_advantages(r4, 4, "rloo"))
    print("  no baseline (none)      ", group_advantages(r4, 4, "none"))
    easy_hard = torch.tensor([1., 1, 1, 1, 0, 0, 0, 0])
    print("r = [1,1,1,1 | 0,0,0,0]   ", group_advantages(easy_hard, 4), "(no signal, no NaN)")
    lengths, correct = torch.tensor([10, 20, 30, 40]), torch.tensor([True, True, False, False])
    print("Kimi length reward, lengths", lengths.tolist(), "correct", correct.tolist(), "->",
          length_rewards(lengths, correct, 4))
    g = torch.Generator().manual_seed(0)
    rewards = (torch.rand(64 * 8, generator=g) < 0.2).float()  # 64 prompts, G = 8, pass rate ~0.2
    print("group_stats, p ~ 0.2, G = 8:", {k: round(v, 3) for k, v in group_stats(rewards.bool(), group_advantages(
        rewards, 8), 8).items()})
    right, lam = torch.ones(4), length_rewards(lengths, torch.ones(4, dtype=torch.bool), 4)
    print("all right, lengths", lengths.tolist(), "with the length reward at weight w:")
    for w in (0.1, 0.01):
        print(f"  w = {w}: shaped on its own {shaped_advantages(right, w * lam, 4)}   inside the reward, divided by "
              f"sigma {group_advantages(right + w * lam, 4)}")
