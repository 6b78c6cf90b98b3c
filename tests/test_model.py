"""The GPT: causality, padding invariance, the KV cache, positions, errors."""
import pytest
import torch

from model import GPT, GPTConfig, positions

CFG = GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=32)


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**CFG.__dict__, **kw})).eval()


def test_causality_future_tokens_never_change_earlier_logits():
    model = tiny()
    x = torch.randint(0, 50, (2, 16))
    base = model(x)  # (B, T, V)
    for t in range(15):
        y = x.clone()
        y[:, t + 1:] = torch.randint(0, 50, (2, 15 - t))
        out = model(y)
        assert torch.allclose(out[:, :t + 1], base[:, :t + 1], atol=1e-5)
        assert not torch.allclose(out[:, t + 1:], base[:, t + 1:], atol=1e-3)  # the test can see a change


def test_padded_rows_equal_their_single_row_logits():
    model = tiny(1)
    rows = [[3, 4, 5], [6, 7, 8, 9, 10, 11], [12]]
    T = max(map(len, rows))
    idx = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, r in enumerate(rows):  # left padding, with garbage in the padding slots
        idx[i, :T - len(r)] = 49
        idx[i, T - len(r):] = torch.tensor(r)
        mask[i, T - len(r):] = True
    out = model(idx, pos=positions(mask), key_mask=mask)
    for i, r in enumerate(rows):
        alone = model(torch.tensor([r]))[0]
        assert torch.allclose(out[i, T - len(r):], alone, atol=1e-5)


def test_kv_cache_prefill_then_decode_equals_full_forward():
    model = tiny(2)
    x = torch.randint(0, 50, (3, 12))
    full = model(x)
    cache = model.make_cache(3, 12)
    out = [model(x[:, :5], cache=cache)]  # prefill 5 tokens
    for t in range(5, 12):  # then one token at a time
        out.append(model(x[:, t:t + 1], cache=cache, start=t))
    assert torch.allclose(torch.cat(out, 1), full, atol=1e-5)


def test_kv_cache_decoding_a_left_padded_batch_equals_the_full_forward():
    """One-token decoding over the cache, with a padding mask and per-row positions, gives the logits of one full
    forward pass over the same padded batch."""
    model = tiny(5)
    lens, T, prefill = [2, 6, 4], 10, 6  # real prompt lengths, total columns, padded prompt width
    x = torch.randint(0, 50, (3, T))
    mask = torch.ones(3, T, dtype=torch.bool)
    for i, n in enumerate(lens):
        mask[i, :prefill - n] = False  # left padding
    pos = positions(mask)
    full = model(x, pos=pos, key_mask=mask)  # (3, T, V)
    cache = model.make_cache(3, T)
    out = [model(x[:, :prefill], pos=pos[:, :prefill], key_mask=mask[:, :prefill], cache=cache)]
    for t in range(prefill, T):
        out.append(model(x[:, t:t + 1], pos=pos[:, t:t + 1], key_mask=mask[:, :t + 1], cache=cache, start=t))
    out = torch.cat(out, 1)  # (3, T, V)
    assert torch.allclose(out[mask], full[mask], atol=1e-5)
    assert cache.k.shape == (CFG.n_layer, 3, CFG.n_head, T, CFG.n_embd // CFG.n_head)


def test_hidden_states_times_unembedding_are_the_logits():
    model = tiny(3)
    x = torch.randint(0, 50, (2, 7))
    h = model(x, return_hidden=True)
    assert h.shape == (2, 7, 32)
    assert torch.allclose(h @ model.transformer.wte.weight.T, model(x), atol=1e-5)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied


def test_naive_generate_extends_greedily_and_stops_at_eos():
    model = tiny(4)
    out = model.generate(torch.tensor([[1, 2]]), max_new_tokens=5, temperature=0)
    assert out.shape == (1, 7)
    for t in range(2, 7):
        assert out[0, t] == model(out[:, :t])[0, -1].argmax()
    eos = int(out[0, 2])
    assert model.generate(torch.tensor([[1, 2]]), 5, temperature=0, eos_id=eos).shape == (1, 3)


def test_positions_start_at_zero_after_left_padding():
    mask = torch.tensor([[False, False, True, True, True], [True, True, True, True, True], [False] * 4 + [True]])
    assert positions(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]]


def test_positions_beyond_block_size_are_refused():
    with pytest.raises(ValueError, match="block_size"):
        tiny()(torch.zeros(1, 33, dtype=torch.long))
    model = tiny()
    cache = model.make_cache(1, 33)
    with pytest.raises(ValueError, match="start 32 .* exceed block_size=32"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache, start=32)

