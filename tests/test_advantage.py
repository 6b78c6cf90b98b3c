"""Group advantages against worked numbers and hand loops; the length reward; group statistics."""
import pytest
import torch

from advantage import group_advantages, group_stats, length_rewards, shaped_advantages


def test_population_std_worked_example():
    # worked by hand: G = 8, sigma = 0.4841, A = +1.291 (correct) / -0.7746 (wrong)
    r = torch.tensor([1., 0, 1, 0, 0, 1, 0, 0])
    adv = group_advantages(r, 8)
    assert torch.allclose(adv[r == 1], torch.tensor(1.291), atol=1e-3)
    assert torch.allclose(adv[r == 0], torch.tensor(-0.7746), atol=1e-3)
    bessel = group_advantages(r, 8, unbiased_std=True)  # the other convention gives other numbers
    assert not torch.allclose(bessel[r == 1], torch.tensor(1.291), atol=1e-3)


def test_bessel_std_worked_example():
    # worked by hand ("Solve 2x + 3 = 11"): r = [1, 0, 1, 0], torch.std = 0.5774, A = +-0.866
    r = torch.tensor([1., 0, 1, 0])
    adv = group_advantages(r, 4, unbiased_std=True)
    assert torch.allclose(adv, torch.tensor([0.866, -0.866, 0.866, -0.866]), atol=1e-3)
    assert torch.allclose(group_advantages(r, 4), torch.tensor([1., -1, 1, -1]), atol=1e-3)  # population


@pytest.mark.parametrize("method", ["grpo", "drgrpo", "rloo"])
@pytest.mark.parametrize("eps", [1e-4, 0.0])
def test_all_equal_groups_give_exactly_zero(method, eps):
    # easy, impossible, and a non-binary reward whose float32 group mean is not exactly 0.9
    r = torch.tensor([1., 1, 1, 0, 0, 0, 0.9, 0.9, 0.9, 1, 0, 0])
    assert (r[6:9] - r[6:9].mean() != 0).all()
    adv = group_advantages(r, 3, method, eps=eps)
    assert not torch.isnan(adv).any()
    assert (adv[:9] == 0).all()
    assert (adv[9:] != 0).all()  # the one mixed group still carries signal


def test_groups_are_normalised_independently():
    g = torch.Generator().manual_seed(0)
    r = torch.rand(5 * 6, generator=g)
    adv = group_advantages(r, 6)
    for i in range(5):
        x = r[6 * i:6 * i + 6]
        expected = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-4)
        assert torch.allclose(adv[6 * i:6 * i + 6], expected, atol=1e-6)


def test_rloo_matches_hand_loop():
    g = torch.Generator().manual_seed(1)
    r = (torch.rand(4 * 5, generator=g) < 0.5).float()
    adv = group_advantages(r, 5, "rloo")
    for i in range(len(r)):
        group = list(range(i - i % 5, i - i % 5 + 5))
        others = [r[j].item() for j in group if j != i]
        assert adv[i].item() == pytest.approx(r[i].item() - sum(others) / len(others), abs=1e-6)


def test_drgrpo_is_mean_baseline_only():
    # worked by hand: [1, 0, 1, 0] -> +-0.5; [1, 0, 0, 1] -> [+.5, -.5, -.5, +.5]
    r = torch.tensor([1., 0, 1, 0, 1, 0, 0, 1])
    assert torch.allclose(group_advantages(r, 4, "drgrpo"), torch.tensor([.5, -.5, .5, -.5, .5, -.5, -.5, .5]))


def test_none_is_raw_rewards_and_centred_methods_sum_to_zero_with_the_right_sign():
    r = torch.tensor([1, 0, 0, 0, 1, 1, 0, 1])  # ints are accepted
    assert torch.equal(group_advantages(r, 4, "none"), r.float())
    for method in ("grpo", "drgrpo", "rloo"):
        adv = group_advantages(r, 4, method)
        assert torch.allclose(adv.view(2, 4).sum(1), torch.zeros(2), atol=1e-6)
        assert ((adv > 0) == r.bool()).all()  # better than the group's mean: pushed up; worse: pushed down


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="ppo"):
        group_advantages(torch.zeros(8), 4, "ppo")
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="group_size"):
        length_rewards(torch.zeros(6), torch.zeros(6), 4)


def test_length_rewards_kimi_formula():
    lengths = torch.tensor([10, 20, 30, 40, 10, 40, 7, 7])
    correct = torch.tensor([True, True, False, False, False, True, True, False])
    lam = length_rewards(lengths, correct, 4)
    # group 1: lam = 0.5 - (len - 10) / 30; wrong answers keep only the penalty min(0, lam)
    assert torch.allclose(lam[:4], torch.tensor([0.5, 0.5 - 1 / 3, min(0, 0.5 - 2 / 3), -0.5]))
    lam2 = length_rewards(lengths[:4].flip(0), correct[:4], 4)  # the reward follows the length, not the slot
    assert torch.allclose(lam2, torch.tensor([-0.5, 0.5 - 2 / 3, 0.0, 0.0]))
    # group 2: a short wrong answer earns nothing for being short; equal lengths inside a pair -> 0, no NaN
    g2 = length_rewards(torch.tensor([10, 40, 7, 7]), torch.tensor([False, True, True, False]), 2)
    assert torch.equal(g2, torch.tensor([0.0, -0.5, 0.0, 0.0]))


def test_group_stats_counts_and_prediction():
    r = torch.tensor([1., 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0])
    s = group_stats(r.bool(), group_advantages(r, 4), 4)
    p = 7 / 16
    assert s["zero_signal"] == 0.5 and s["all_pass_frac"] == 0.25 and s["all_fail_frac"] == 0.25
    assert s["pass_rate"] == pytest.approx(p)
    assert s["zero_signal_pred"] == pytest.approx(p ** 4 + (1 - p) ** 4)
    assert all(isinstance(v, float) for v in s.values())


def test_zero_variance_share_matches_p_to_the_G():
    # every prompt with the same pass rate p: the measured share approaches p^G + (1-p)^G
    g = torch.Generator().manual_seed(0)
    G, p, prompts = 4, 0.3, 20000
    correct = torch.rand(prompts * G, generator=g) < p
    s = group_stats(correct, group_advantages(correct.float(), G), G)
    assert s["zero_signal"] == pytest.approx(0.3 ** 4 + 0.7 ** 4, abs=0.01)  # 0.2482; SE ~ 0.003
    assert s["zero_signal_pred"] == pytest.approx(s["zero_signal"], abs=0.015)


# ------------------------------------------------------------------------------------ shaping keeps its scale
@pytest.mark.parametrize("method", ["grpo", "drgrpo", "rloo"])
def test_a_shaping_weight_w_gives_advantages_of_order_w(method):
    """In a group whose answers are all right, the only spread is the shaping term's. Divided by that spread
    (GRPO's sigma), a 1% length weight would push as hard as correctness: advantages +-0.47 at w = 0.01. Shaping
    is centred on its own and never divided by sigma, so its advantages are O(w) and vanish with w."""
    lengths, right = torch.tensor([10, 20, 30, 40]), torch.ones(4, dtype=torch.bool)
    lam = length_rewards(lengths, right, 4)  # [0.5, 1/6, -1/6, -0.5]
    for w in (0.1, 0.01, 1e-4, 0.0):
        adv = shaped_advantages(right.float(), w * lam, 4, method)
        assert adv.abs().max() <= 1.5 * w * lam.abs().max() + 1e-9, (w, adv)
        assert adv.abs().max() >= 0.5 * w * lam.abs().max()  # and still pushes, in the right order
        assert w == 0 or (adv.diff() < 0).all()


@pytest.mark.parametrize("method", ["grpo", "drgrpo", "rloo"])
def test_in_a_mixed_group_correctness_still_dominates_the_shaping(method):
    correct = torch.tensor([True, False, True, False])
    lam = length_rewards(torch.tensor([40, 10, 30, 20]), correct, 4)  # the longest right answer is penalised most
    adv = shaped_advantages(correct.float(), 0.1 * lam, 4, method)
    plain = group_advantages(correct.float(), 4, method)
    assert ((adv > 0) == correct).all()  # every right answer still above every wrong one
    assert (adv - plain).abs().max() <= 0.15 * plain.abs().max()


def test_none_adds_the_shaping_uncentred():
    r, s = torch.tensor([1., 1, 0, 0]), torch.tensor([0.1, 0.0, 0.1, 0.0])
    assert torch.allclose(shaped_advantages(r, s, 4, "none"), r + s)


def test_group_stats_counts_passes_from_correctness_and_signal_from_the_advantages():
    """A format bonus of 0.6 makes a formatted wrong answer's reward 0.6: still not a pass. And a group the
    advantages give no push (all right, no shaping) is zero-signal, while all right with length shaping is not."""
    correct = torch.tensor([True, True, True, True, False, False, False, False, True, False, False, False])
    formatted = torch.tensor([True] * 12)
    adv = shaped_advantages(correct.float(), 0.6 * formatted.float(), 4)
    s = group_stats(correct, adv, 4)
    assert s["pass_rate"] == pytest.approx(5 / 12) and s["all_pass_frac"] == pytest.approx(1 / 3)
    assert s["zero_signal"] == pytest.approx(2 / 3)
    lengths = torch.tensor([5, 6, 7, 8, 9, 9, 9, 9, 10, 11, 12, 13])  # the all-wrong group: equal lengths
    shaped = shaped_advantages(correct.float(), 0.01 * length_rewards(lengths, correct, 4), 4)
    assert group_stats(correct, shaped, 4)["zero_signal"] == pytest.approx(1 / 3)  # only the all-wrong group
