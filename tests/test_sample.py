"""sample.py: the KV-cache sampler against the naive reference and the full forward pass; EOS, truncation, seeds,
padding, temperature, errors. Tiny CPU models; the whole file runs in a few seconds."""
import math

import pytest
import torch
import torch.nn.functional as F

import sample as sample_module
from grpo import token_logprobs
from model import GPT, GPTConfig, positions
from sample import budget_rule, draw, sample

V = 40
CFG = GPTConfig(n_layer=2, n_head=4, n_embd=64, vocab_size=V, block_size=64)
PROMPTS = [[5], [1, 2, 3, 4, 5, 6, 7], [9, 8, 7], [11, 12]]  # mixed lengths, the shortest first


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread, and far faster than two threads competing with other jobs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(seed=0):
    """A random GPT with every weight matrix scaled by 10. At GPT-2's init the logits are ~0.1 apart (too flat for
    temperature to show); this one has varied distributions with a few likely tokens each."""
    torch.manual_seed(seed)
    model = GPT(CFG).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(10)
    return model


def gen(seed):
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def full_logits(model, s):
    """Score the whole batch in one forward pass, as grpo.py will: (B, L, V), column c predicts column c + 1."""
    return model(s.tokens, pos=positions(s.key_mask), key_mask=s.key_mask)


def check_invariants(s, prompts, group_size, max_new_tokens, eos_id=None, pad_id=0):
    """What every Samples must satisfy, whatever was drawn."""
    B, L = s.tokens.shape
    Lp = s.prompt_len
    assert B == len(prompts) * group_size and Lp == max(map(len, prompts))
    assert Lp < L <= Lp + max_new_tokens  # max_new_tokens is never exceeded
    assert torch.equal(s.lengths, s.mask.sum(1).long())
    assert L == Lp + int(s.lengths.max())  # the loop stopped as soon as every row was done
    assert not s.mask[:, :Lp].any() and torch.all(s.logprobs[:, :Lp] == 0)  # the prompt never counts
    for r in range(B):
        p, n = prompts[r // group_size], int(s.lengths[r])
        assert s.tokens[r, Lp - len(p):Lp].tolist() == p and s.tokens[r, :Lp - len(p)].eq(pad_id).all()
        assert s.key_mask[r, Lp - len(p):Lp + n].all() and not s.key_mask[r, :Lp - len(p)].any()
        assert s.mask[r, Lp:Lp + n].eq(1).all()  # one contiguous run from the first new token ...
        assert not s.mask[r, Lp + n:].any() and not s.key_mask[r, Lp + n:].any()  # ... and nothing after it
        assert s.tokens[r, Lp + n:].eq(pad_id).all() and torch.all(s.logprobs[r, Lp + n:] == 0)
        lp = s.logprobs[r, Lp:Lp + n]
        assert torch.isfinite(lp).all() and (lp <= 0).all()
        eos_at = (s.tokens[r, Lp:Lp + n] == eos_id).nonzero().flatten().tolist() if eos_id is not None else []
        if s.finished[r]:  # EOS is the last masked token, and the only EOS
            assert eos_at == [n - 1]
        else:  # truncated: the whole budget, no EOS
            assert eos_at == [] and n == max_new_tokens


# ------------------------------------------------------------------ the KV cache against recomputing everything

@pytest.mark.parametrize("with_eos", [False, True])
def test_greedy_equals_naive_generate_for_mixed_prompt_lengths(with_eos):
    model, G, N = tiny(1), 3, 12
    eos_id = None
    if with_eos:  # a token the greedy continuation of one prompt reaches mid-way
        eos_id = int(model.generate(torch.tensor([PROMPTS[1]]), N, temperature=0)[0, len(PROMPTS[1]) + 4])
    s = sample(model, PROMPTS, G, N, temperature=0, eos_id=eos_id)
    check_invariants(s, PROMPTS, G, N, eos_id)
    Lp = s.prompt_len
    for r in range(len(PROMPTS) * G):
        p = PROMPTS[r // G]
        ref = model.generate(torch.tensor([p]), N, temperature=0, eos_id=eos_id)[0, len(p):]  # (n,)
        assert s.tokens[r, Lp:Lp + int(s.lengths[r])].tolist() == ref.tolist()
        assert bool(s.finished[r]) == (eos_id is not None and int(ref[-1]) == eos_id)
    if with_eos:
        assert s.finished.any() and not s.finished.all()  # the test saw both endings


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.3, 0.0])
def test_logprobs_equal_the_full_forward_at_every_row_and_step(temperature):
    model, G, N = tiny(2), 3, 16
    s = sample(model, PROMPTS, G, N, temperature, eos_id=7, generator=gen(0))
    check_invariants(s, PROMPTS, G, N, eos_id=7)
    logits = full_logits(model, s)[:, :-1]  # (B, L-1, V), predicting columns 1 .. L-1
    if temperature == 0:  # greedy reports the untempered log-probs
        ref = F.log_softmax(logits, -1)  # (B, L-1, V)
    else:
        ref = F.log_softmax(logits / temperature, -1)  # (B, L-1, V)
    ref = ref.gather(-1, s.tokens[:, 1:, None])[..., 0]  # (B, L-1)
    m = s.mask[:, 1:].bool()
    assert m.sum() > 40
    torch.testing.assert_close(s.logprobs[:, 1:][m], ref[m], atol=1e-5, rtol=0)
    if temperature > 0:  # and exactly what the trainer (grpo.py) scores at the same temperature: ratio 1
        with torch.no_grad():
            hidden = model(s.tokens, pos=positions(s.key_mask), key_mask=s.key_mask, return_hidden=True)[:, :-1]
            scored = token_logprobs(hidden, model.lm_head.weight, s.tokens[:, 1:], temperature)  # (B, L-1)
        torch.testing.assert_close(s.logprobs[:, 1:][m], scored[m], atol=1e-5, rtol=0)


# ------------------------------------------------------------------ EOS, truncation, stopping early

def test_eos_ends_some_rows_and_truncates_the_others():
    model, G, N = tiny(3), 4, 10
    s = sample(model, PROMPTS, G, N, eos_id=7, generator=gen(1))
    check_invariants(s, PROMPTS, G, N, eos_id=7)
    assert s.finished.any() and not s.finished.all()  # both endings occur (seeded)
    assert torch.all(s.lengths[~s.finished] == N)
    assert torch.all(s.tokens[s.finished, s.prompt_len + s.lengths[s.finished] - 1] == 7)


def test_a_batch_whose_rows_all_finish_early_stops_early():
    """Make every position's next-token distribution the same, p(EOS) ≈ 0.35: rows finish at geometric times."""
    model, G, N, eos_id = tiny(4), 6, 56, 3
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()  # the final hidden state is ln_f.bias, whatever the input
        model.transformer.ln_f.bias.fill_(1.0)
        model.transformer.wte.weight[eos_id] = 0.075  # EOS's logit = 64 · 0.075 = 4.8
        p_eos = float(model(torch.tensor([[1]]))[0, -1].softmax(-1)[eos_id])
    assert 0.2 < p_eos < 0.5
    steps = []
    counted = lambda *a: steps.append(1) or decode_step(*a)
    decode_step, sample_module.decode_step = sample_module.decode_step, counted
    try:
        s = sample(model, PROMPTS, G, N, eos_id=eos_id, generator=gen(2))
    finally:
        sample_module.decode_step = decode_step
    check_invariants(s, PROMPTS, G, N, eos_id)
    assert s.finished.all()
    assert len(steps) == int(s.lengths.max()) - 1  # no decode step after the last row finished
    assert s.tokens.shape[1] == s.prompt_len + int(s.lengths.max()) < s.prompt_len + N  # stopped early
    assert len(set(s.lengths.tolist())) > 3  # the rows did finish at different steps


def test_max_new_tokens_reaching_block_size_exactly():
    model = tiny(5)
    s = sample(model, [[1] * 60, [2, 3]], 2, 4, generator=gen(0))  # 60 + 4 == block_size
    check_invariants(s, [[1] * 60, [2, 3]], 2, 4)
    assert s.tokens.shape == (4, 64)


# ------------------------------------------------------------------ drawing by inverse CDF

def test_draw_inverts_the_cdf_at_the_uniforms():
    probs = torch.tensor([0.5, 0.25, 0.125, 0.125])  # exact in fp32: the CDF is 0.5, 0.75, 0.875, 1
    logits = probs.log()[None].expand(6, 4)  # (B, V)
    u = torch.tensor([0.0, 0.49, 0.5, 0.74, 0.8, 0.999])
    tok, lp = draw(logits, u, 1.0)
    assert tok.tolist() == [0, 0, 1, 1, 2, 3]  # token i when cdf[i-1] <= u < cdf[i]
    torch.testing.assert_close(lp, probs.log()[tok])


def test_draw_never_returns_a_token_without_mass():
    logits = torch.tensor([[0.0, 1.0, -1e4, -1e4]]).expand(2, 4)  # (B, V): the last two underflow to 0
    tok, lp = draw(logits, torch.tensor([1.0, 0.9999999]), 1.0)  # u = 1 stands for u·total rounding up
    assert tok.tolist() == [1, 1] and torch.isfinite(lp).all()


# ------------------------------------------------------------------ randomness and padding

def test_seeded_runs_repeat_and_rows_of_a_group_differ():
    model, G = tiny(8), 4
    a = sample(model, PROMPTS, G, 10, eos_id=7, generator=gen(3))
    b = sample(model, PROMPTS, G, 10, eos_id=7, generator=gen(3))
    c = sample(model, PROMPTS, G, 10, eos_id=7, generator=gen(4))
    for field in ("tokens", "key_mask", "mask", "logprobs", "finished", "lengths"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.tokens, c.tokens)
    for i in range(len(PROMPTS)):
        completions = {tuple(row.tolist()) for row in a.tokens[i * G:(i + 1) * G, a.prompt_len:]}
        assert len(completions) == G


def test_a_padded_row_equals_the_same_prompt_sampled_alone():
    """Row r draws with the r-th row of uniforms, so the short prompt goes first in the batch."""
    model, G, N, short, long = tiny(9), 3, 12, [5, 6], [1, 2, 3, 4, 5, 6, 7, 8, 9]
    batch = sample(model, [short, long], G, N, eos_id=7, generator=gen(5))
    alone = sample(model, [short], G, N, eos_id=7, generator=gen(5))
    assert batch.prompt_len == len(long) and alone.prompt_len == len(short)
    for r in range(G):
        n = int(alone.lengths[r])
        assert int(batch.lengths[r]) == n and bool(batch.finished[r]) == bool(alone.finished[r])
        cols_b, cols_a = slice(batch.prompt_len, batch.prompt_len + n), slice(alone.prompt_len, alone.prompt_len + n)
        assert torch.equal(batch.tokens[r, cols_b], alone.tokens[r, cols_a])
        torch.testing.assert_close(batch.logprobs[r, cols_b], alone.logprobs[r, cols_a], atol=1e-5, rtol=0)


def test_the_pad_token_is_never_counted_and_never_seen():
    model, G, N = tiny(10), 2, 12
    base = sample(model, PROMPTS, G, N, eos_id=7, generator=gen(6))
    frequent = int(base.tokens[:, base.prompt_len:][base.mask[:, base.prompt_len:].bool()].mode().values)
    s = sample(model, PROMPTS, G, N, eos_id=7, generator=gen(6), pad_id=frequent)  # pad with a real token
    check_invariants(s, PROMPTS, G, N, eos_id=7, pad_id=frequent)
    cols = torch.arange(s.tokens.shape[1])  # (L,)
    assert torch.equal(s.mask.bool(), s.key_mask & (cols >= s.prompt_len))  # mask = generated, whatever the id
    assert (s.tokens[s.mask.bool()] == frequent).any()  # generated copies of pad_id do count
    assert torch.equal(s.tokens[s.key_mask], base.tokens[base.key_mask])  # the pad value changes nothing
    assert torch.equal(s.logprobs, base.logprobs)


# ------------------------------------------------------------------ the distribution itself

def chi_square(counts, probs):
    """Pearson's statistic and its degrees of freedom, bins with expected count < 5 merged into one."""
    expected = probs * counts.sum()  # (V,)
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum()[None]]).double()
    exp = torch.cat([expected[~small], expected[small].sum()[None]]).double()
    keep = exp > 0
    return float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()), int(keep.sum()) - 1


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_first_token_frequencies_match_the_tempered_softmax(temperature):
    model, prompt, n = tiny(11), [3, 1, 4], 20000
    s = sample(model, [prompt], n, 1, temperature, generator=gen(8))  # n rows, one token each
    counts = torch.bincount(s.tokens[:, -1], minlength=V)  # (V,)
    with torch.no_grad():
        logits = model(torch.tensor([prompt]))[0, -1]  # (V,)
    probs = (logits / temperature).softmax(-1)  # (V,)
    stat, dof = chi_square(counts, probs)
    assert stat < dof + 6 * math.sqrt(2 * dof), (stat, dof)  # mean dof, sd sqrt(2 dof)
    if temperature != 1.0:  # and the test can tell temperatures apart
        stat, dof = chi_square(counts, logits.softmax(-1))
        assert stat > dof + 20 * math.sqrt(2 * dof), (stat, dof)


# ------------------------------------------------------------------ errors

def test_errors_say_what_is_wrong():
    model = tiny(12)
    with pytest.raises(ValueError, match="at least one prompt"):
        sample(model, [], 2, 4)
    with pytest.raises(ValueError, match="empty"):
        sample(model, [[1, 2], []], 2, 4)
    with pytest.raises(ValueError, match="block_size"):
        sample(model, [[1] * 60, [2]], 2, 5)  # 60 + 5 > 64
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample(model, [[1]], 2, 0)
    with pytest.raises(ValueError, match="temperature"):
        sample(model, [[1]], 2, 4, temperature=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        sample(model, [[1]], 2, 4, temperature=float("nan"))


# ------------------------------------------------------------------ the thinking budget

@pytest.mark.parametrize("n_think", [0, 3])
def test_a_row_cut_by_the_budget_equals_the_forced_prefix_supplied_by_hand(n_think):
    """Cutting a row's thinking at n tokens must give exactly what the same prompt gives with the forced prefix
    (its own tokens so far, then the forced string) typed into the prompt: the same tokens and log-probs, drawn
    with the uniforms the row had left. Before the cut, the row is the unbudgeted row."""
    model, G, N, prompt = tiny(11), 8, 16, [1, 2, 3]
    u = torch.rand(G, N, generator=gen(12))
    plain = sample(model, [prompt], G, N, eos_id=7, uniforms=u)
    open_id = int(plain.tokens[0, plain.prompt_len])  # what row 0 writes first plays <think>
    forced = [30, 31]  # </think><answer>
    cut = sample(model, [prompt], G, N, eos_id=7, uniforms=u, force=[budget_rule(n_think, open_id, forced)])
    Lp, n_cut = cut.prompt_len, 0
    for r in range(G):
        row, n = cut.tokens[r, Lp:Lp + int(cut.lengths[r])].tolist(), int(cut.lengths[r])
        free = cut.mask[r, Lp:Lp + n].bool()
        if free.all():  # never cut: the row is the unbudgeted one
            n_plain = int(plain.lengths[r])
            assert row == plain.tokens[r, Lp:Lp + n_plain].tolist()
            assert open_id not in row[:max(0, n - n_think - 1)] or forced[0] in row
            continue
        n_cut += 1
        k = int((~free).nonzero()[0])  # the first forced column
        assert row[k:k + 2] == forced and not free[k:k + 2].any() and free[k + 2:].all()
        assert row.index(open_id) == k - n_think - 1  # cut exactly n tokens after the opening token
        assert torch.all(cut.logprobs[r, Lp + k:Lp + k + 2] == 0)
        assert row[:k] == plain.tokens[r, Lp:Lp + k].tolist()
        torch.testing.assert_close(cut.logprobs[r, Lp:Lp + k], plain.logprobs[r, Lp:Lp + k], atol=1e-5, rtol=0)
        if k + 2 == N:
            continue
        by_hand = sample(model, [prompt + row[:k + 2]], 1, N - k - 2, eos_id=7, uniforms=u[r:r + 1, k + 2:])
        m = int(by_hand.lengths[0])
        assert n == k + 2 + m and bool(cut.finished[r]) == bool(by_hand.finished[0])
        assert row[k + 2:] == by_hand.tokens[0, by_hand.prompt_len:].tolist()
        torch.testing.assert_close(cut.logprobs[r, Lp + k + 2:Lp + n], by_hand.logprobs[0, by_hand.prompt_len:],
                                   atol=1e-5, rtol=0)
    assert n_cut >= 2  # the test saw the budget act
    assert torch.equal(cut.lengths, cut.key_mask[:, Lp:].sum(1))  # lengths count the forced tokens too


def test_a_budget_row_that_closes_by_itself_is_never_forced():
    """A row that writes the closing token within its budget is left alone."""
    model, G, N, prompt = tiny(11), 8, 16, [1, 2, 3]
    u = torch.rand(G, N, generator=gen(12))
    plain = sample(model, [prompt], G, N, eos_id=7, uniforms=u)
    row0 = plain.tokens[0, plain.prompt_len:].tolist()
    # open with row 0's first token and "close" with its second: row 0 closes at once, inside any budget
    cut = sample(model, [prompt], G, N, eos_id=7, uniforms=u, force=[budget_rule(2, row0[0], [row0[1], 30])])
    assert torch.equal(cut.tokens[0], plain.tokens[0]) and cut.mask[0].sum() == plain.mask[0].sum()
