"""
sample.py: KV-cache sampling of G completions for each of P prompts, by hand.

The idea: GRPO spends most of its time here. Each distinct prompt is run through the model once (prefill) and its
keys/values are copied to its G rows of a preallocated cache; then all B = P·G rows advance one token per step
(decode), each step attending to the cached keys instead of recomputing the whole context:
    prefill: K, V[:, :, :Lp] = f(prompt)           decode: y_t ~ softmax(logits(y_{t-1} | K, V[:, :, :Lp+t]) / τ)
Prompts of different lengths are left-padded to Lp; a key mask hides the padding and every row carries its own
positions, so each row gets exactly the distribution it would get alone.

Randomness and log-probs:
 1. All uniforms are drawn up front, U (B, max_new_tokens) from `generator`, and row r draws its token at step t
    by inverting the CDF at U[r, t]. So a row's sample depends only on its own row of U: same seed, same tokens,
    and rows of one group differ because their uniforms do. (A prompt sampled alone draws exactly what it draws
    as the first prompt of a batch; elsewhere in the batch it gets other rows of U.)
 2. `logprobs` are the log-probabilities of the sampled tokens under the distribution they were drawn from:
    log_softmax(logits / temperature), renormalised over the kept set when top_k / top_p truncate it (tokens
    outside it cannot be drawn). With the defaults (temperature 1, no truncation) this is exactly what grpo.py
    computes from the same weights, so on-policy importance ratios are 1. Greedy (temperature 0) reports the
    untempered log_softmax(logits), since the point mass it draws from would always say 0.

Speed: a decode step does little arithmetic per byte it reads (each weight meets only B rows, each cached key
and value one query), so it is bound by memory reads: of the weights for GPT-2 small, of the KV cache for the
default model at B = 64. Two choices make those reads fast on a CPU: the cache is slot-major, so the part written
so far is one contiguous block (model.KVCache), and on x86 the linears run through oneDNN on weights packed once
per call (`packed_linears`; the benchmark prints what it is worth). A torch.compile'd decode step was slower on
CPU, so there is none.

Run: `python sample.py [--quick] [--device cuda] [--threads 1]` prints new tokens/s of this sampler against the
naive recompute-everything reference (and transformers' generate, if installed); ~3 minutes on a 2-core CPU.
Tests: `python -m pytest tests/test_sample.py` (a few seconds).
Shapes: P prompts, G group size, B = P·G rows, Lp padded prompt length, N max_new_tokens, L = Lp + N, V vocab.
"""
import argparse
import platform
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from model import GPT, GPTConfig


@dataclass
class Samples:
    tokens: torch.Tensor     # (B, L) long: left-padded prompt, then the completion, then pad_id
    valid: torch.Tensor      # (B, L) bool: real tokens (prompt and completion up to EOS): the model's key mask
    mask: torch.Tensor       # (B, L) float: 1 on generated tokens up to and including EOS, else 0
    logprobs: torch.Tensor   # (B, L) float: log-prob of each generated token as sampled (0 where mask is 0)
    finished: torch.Tensor   # (B,) bool: ended with EOS (False: truncated at max_new_tokens)
    lengths: torch.Tensor    # (B,) long: completion lengths, EOS included
    prompt_len: int          # Lp: completions start at this column

    def positions(self):
        """(B, L) positions of every column: the prompt's first real token is at 0, as when sampled alone."""
        return (self.valid.long().cumsum(1) - 1).clamp(min=0)


def filter_logits(logits, temperature=1.0, top_k=None, top_p=None):
    """logits (B, V) -> log-probs (B, V) of the distribution to draw from: softmax(logits / temperature) restricted
    to a kept set and renormalised over it (-inf outside). top_k keeps the k largest logits; top_p then keeps the
    smallest set of most likely tokens whose mass reaches top_p. Tokens tied with the least likely kept token are
    kept too, so the set depends on the probabilities only, never on token ids (it may hold more than k tokens)."""
    logits = logits.float() / temperature  # (B, V)
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        probs = logits.softmax(-1)  # (B, V)
        sorted_probs = probs.sort(-1, descending=True).values  # (B, V)
        # The prefixes whose mass is still below top_p, plus one token: the first prefix that reaches it.
        n_keep = (sorted_probs.cumsum(-1) < top_p).sum(-1, keepdim=True) + 1  # (B, 1)
        least = sorted_probs.gather(-1, n_keep.clamp(max=logits.size(-1)) - 1)  # (B, 1) least likely kept prob
        logits = logits.masked_fill(probs < least, float("-inf"))
    return F.log_softmax(logits, dim=-1)


def draw(logits, u, temperature, top_k, top_p):
    """One token per row by inverse CDF at the uniforms u (B,). Returns tokens (B,) and their log-probs (B,)."""
    if temperature == 0:
        tok = logits.argmax(-1)  # (B,)
        return tok, F.log_softmax(logits.float(), -1).gather(-1, tok[:, None])[:, 0]
    logp = filter_logits(logits, temperature, top_k, top_p)  # (B, V)
    cdf = logp.exp().cumsum(-1)  # (B, V)
    # Token i is drawn when cdf[i-1] <= u·total < cdf[i]: a zero-probability token's step has zero width.
    tok = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]  # (B,)
    # u·total can round up to total (u is at most 1 - 2^-24): then take the last token that has any mass.
    last = (cdf < cdf[:, -1:]).sum(-1)  # (B,) where the CDF reaches its total
    tok = torch.minimum(tok, last)
    return tok, logp.gather(-1, tok[:, None])[:, 0]


PACK_CPU_WEIGHTS = True  # False: plain F.linear everywhere (the benchmark times both)


@contextmanager
def packed_linears(model, batch_size):
    """While inside, every nn.Linear of an fp32 model on an x86 CPU multiplies through oneDNN with its weight
    packed once up front; elsewhere (CUDA, other dtypes or CPUs) it changes nothing.

    Why: a decode step multiplies only B rows by every weight matrix, so its time is the time to stream the
    weights through the cores. torch's default fp32 CPU matmul (MKL) does such skinny products poorly on the AMD
    EPYC we measured (GPT-2's (50257, 768) unembedding times 8 rows: 20 ms, against 6 ms for oneDNN on a packed
    weight and 4 ms to merely read it). RL changes the weights at every step, so they are packed again at every
    sample() call: 0.27 s for GPT-2 small, a tenth of a 64-token batch. The packed copies double the weights'
    memory while sampling; numerics differ from F.linear by rounding only (tests/test_sample.py). The two ops are
    internal to torch, not a public API, hence the check that they exist."""
    w = model.lm_head.weight
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not (PACK_CPU_WEIGHTS and x86 and w.device.type == "cpu" and w.dtype == torch.float32
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        yield
        return
    for m in linears:  # an instance attribute `forward` shadows nn.Linear.forward until it is deleted
        packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), batch_size)
        m.forward = lambda x, packed=packed, bias=m.bias: torch.ops.mkldnn._linear_pointwise(
            x, packed, bias, "none", [], "")
    try:
        yield
    finally:
        for m in linears:
            del m.forward


@torch.no_grad()
def sample(model, prompts, group_size, max_new_tokens, temperature=1.0, top_k=None, top_p=None, eos_id=None,
           generator=None, pad_id=0):
    """prompts: P lists of token ids (lengths may differ). Returns Samples for B = P·group_size rows, the G rows
    of prompt p consecutive (rows p·G ... p·G + G − 1). Put the model in eval mode first: dropout would make the
    returned log-probs disagree with the distribution the tokens were drawn from."""
    if len(prompts) == 0 or min(len(p) for p in prompts) == 0:
        raise ValueError("sample() needs at least one prompt, and no prompt may be empty")
    if group_size < 1 or max_new_tokens < 1:
        raise ValueError(f"group_size ({group_size}) and max_new_tokens ({max_new_tokens}) must be at least 1")
    if temperature < 0 or (top_k is not None and top_k < 1) or (top_p is not None and not 0 < top_p <= 1):
        raise ValueError(f"need temperature >= 0, top_k >= 1, 0 < top_p <= 1; got {temperature}, {top_k}, {top_p}")
    device = model.lm_head.weight.device
    P, G, N = len(prompts), group_size, max_new_tokens
    B, Lp = P * G, max(len(p) for p in prompts)
    if Lp + N > model.config.block_size:
        raise ValueError(f"prompt length {Lp} + max_new_tokens {N} exceeds the model's block_size "
                         f"{model.config.block_size}")
    rng_device = generator.device if generator is not None else "cpu"
    u = torch.rand(B, N, generator=generator, device=rng_device).to(device)  # (B, N)

    # Left-pad the prompts so every row's completion starts at column Lp.
    prompt = torch.full((P, Lp), pad_id, dtype=torch.long, device=device)  # (P, Lp)
    pvalid = torch.zeros(P, Lp, dtype=torch.bool, device=device)  # (P, Lp)
    for i, p in enumerate(prompts):
        prompt[i, Lp - len(p):] = torch.tensor(p, device=device)
        pvalid[i, Lp - len(p):] = True
    ppos = (pvalid.long().cumsum(1) - 1).clamp(min=0)  # (P, Lp)

    tokens = torch.full((B, Lp + N), pad_id, dtype=torch.long, device=device)  # (B, L)
    tokens[:, :Lp] = prompt.repeat_interleave(G, dim=0)
    valid = torch.zeros(B, Lp + N, dtype=torch.bool, device=device)  # (B, L)
    valid[:, :Lp] = pvalid.repeat_interleave(G, dim=0)
    logprobs = torch.zeros(B, Lp + N, device=device)  # (B, L)
    pos = ppos[:, -1].repeat_interleave(G) + 1  # (B,) position of the first new token
    done = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
    keys = valid.clone()  # (B, L) key mask for decoding: completions count as real even after they finish
    keys[:, Lp:] = True

    # Prefill each distinct prompt once, then copy its keys/values to its G rows. Only the last position needs
    # logits (with GPT-2's 50k vocabulary the unembedding is a third of a forward pass's multiply-adds).
    with packed_linears(model, B):  # a no-op except on x86 CPUs: see packed_linears
        pcache = model.make_cache(P, Lp)
        hidden = model(prompt, pos=ppos, mask=pvalid, cache=pcache, return_hidden=True)[:, -1]  # (P, C)
        logits = model.lm_head(hidden).repeat_interleave(G, dim=0)  # (B, V)
        cache = model.make_cache(B, Lp + N)
        cache.k[:, :Lp] = pcache.k.repeat_interleave(G, dim=2)
        cache.v[:, :Lp] = pcache.v.repeat_interleave(G, dim=2)
        for t in range(N):
            tok, lp = draw(logits, u[:, t], temperature, top_k, top_p)  # (B,), (B,)
            tok = tok.masked_fill(done, pad_id)  # finished rows stop changing
            tokens[:, Lp + t] = tok
            logprobs[:, Lp + t] = lp.masked_fill(done, 0.0)
            valid[:, Lp + t] = ~done
            if eos_id is not None:
                done = done | (tok == eos_id)
                if bool(done.all()):  # a host sync per step, paid only when there is an EOS to stop at
                    break
            if t == N - 1:
                break
            logits = model(tok[:, None], pos=(pos + t)[:, None], mask=keys[:, :Lp + t + 1], cache=cache,
                           start=Lp + t)[:, -1]  # (B, V)
    L = Lp + t + 1  # trim columns no row reached
    mask = valid[:, :L].clone()
    mask[:, :Lp] = False
    return Samples(tokens[:, :L], valid[:, :L], mask.float(), logprobs[:, :L], done,
                   mask.sum(1).long(), Lp)


# ---------------------------------------------------------------------------- the benchmark: python sample.py

def decode_bytes(model, batch, prompt_len, max_new_tokens):
    """Bytes the decode steps of one sample() call must read at least: every weight once per step (of the position
    table only a row), plus the keys and values cached so far. Step t (of N - 1) attends to Lp + t + 1 slots."""
    c, elt = model.config, model.lm_head.weight.element_size()
    weights = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    slots = sum(prompt_len + t + 1 for t in range(max_new_tokens - 1))
    return elt * ((max_new_tokens - 1) * weights + 2 * c.n_layer * batch * c.n_embd * slots)


def hf_generate(model, prompts, group_size, max_new_tokens, pad_id=0):
    """A function running transformers' GPT2LMHeadModel.generate with our weights on the same batch, or None when
    transformers is not installed (it is optional, used here only)."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    c, w = model.config, model.lm_head.weight
    hf = GPT2LMHeadModel(GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=None, eos_token_id=None, pad_token_id=pad_id))
    transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # Conv1D
    sd = {k: v.t() if k.endswith(transposed) else v for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith(".attn.bias") for k in missing), (missing, unexpected)
    hf = hf.to(w.device, w.dtype).eval()
    rows = [p for p in prompts for _ in range(group_size)]
    Lp = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (Lp - len(p)) + p for p in rows], device=w.device)  # (B, Lp) left-padded
    attention_mask = (torch.arange(Lp, device=w.device) >= Lp - torch.tensor([len(p) for p in rows],
                                                                              device=w.device)[:, None]).long()
    with torch.no_grad():  # the same weights must give the same logits
        x = torch.tensor([prompts[0]], device=w.device)  # (1, T)
        ours, theirs = model(x), hf(x, attention_mask=torch.ones_like(x)).logits  # (1, T, V) each
        assert w.dtype != torch.float32 or torch.allclose(ours, theirs, atol=1e-3), (ours - theirs).abs().max()
    return lambda: hf.generate(ids, attention_mask=attention_mask, do_sample=True, top_k=0,
                               max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)


def timed(fn, device, repeats):
    """Seconds of the fastest of `repeats` calls: other jobs on the machine only ever add time."""
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()  # CUDA kernels run asynchronously: wait for them on both sides
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def benchmark(name, config, n_prompts, group_size, prompt_lens, max_new_tokens, naive_rows, device, dtype,
              repeats, bandwidth):
    """Times sample(), the naive reference and (if installed) transformers on one batch; returns the table rows
    and a line saying what packing the weights costs."""
    torch.manual_seed(0)
    model = GPT(config).to(device, dtype).eval()
    g = torch.Generator(device).manual_seed(0)
    prompts = [torch.randint(0, config.vocab_size, (n,)).tolist() for n in prompt_lens]
    B, N = n_prompts * group_size, max_new_tokens
    rows = [torch.tensor([p], device=device) for p in prompts for _ in range(group_size)][:naive_rows]

    def naive():  # model.generate: one row at a time, the whole context recomputed for every new token
        for row in rows:
            model.generate(row, N, temperature=1.0, generator=g)

    def unpacked(n=N):  # the same call on plain F.linear: what packed_linears is worth
        global PACK_CPU_WEIGHTS
        PACK_CPU_WEIGHTS = False
        try:
            sample(model, prompts, group_size, n, generator=g)
        finally:
            PACK_CPU_WEIGHTS = True

    variants = [("KV-cache sample()", B, lambda: sample(model, prompts, group_size, N, generator=g))]
    if device.type == "cpu":
        variants.append(("sample(), PACK_CPU_WEIGHTS=False", B, unpacked))
    variants.append(("naive model.generate", len(rows), naive))
    hf = hf_generate(model, prompts, group_size, N)
    if hf is not None:
        variants.append(("transformers generate", B, hf))
        hf()  # warm up (allocator, kernels, thread pools)
    sample(model, prompts, group_size, 4, generator=g)
    unpacked(4)
    model.generate(rows[0], 4, generator=g)
    best = [float("inf")] * len(variants)
    for _ in range(repeats):  # alternate the variants, so that a slow spell of the machine hits them all alike
        for i, (_, _, fn) in enumerate(variants):
            best[i] = min(best[i], timed(fn, device, 1))
    results = [(sampler, n, n * N / s) for (sampler, n, _), s in zip(variants, best)]
    kv_s = best[0]
    bound = ""
    if device.type == "cuda":  # the time reading the bytes would take at full bandwidth ÷ the time it took
        bound = f"{decode_bytes(model, B, max(prompt_lens), N) / bandwidth / kv_s:.0%}"
    kv_rate = results[0][2]
    dt = str(dtype).removeprefix("torch.")
    table = [f"| {name} | {dt} | {sampler} | {n} | {rate:,.0f} | {kv_rate / rate:.2f}× | {bound if i == 0 else ''} |"
             for i, (sampler, n, rate) in enumerate(results)]

    def pack():
        with packed_linears(model, B):
            pass
    return table, f"{name}: packing the weights takes {timed(pack, device, repeats):.3f} s of each sample() call"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="New tokens per second: KV-cache sample() vs naive recompute.")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--quick", action="store_true", help="16 new tokens, fewer naive rows, one repeat")
    parser.add_argument("--bandwidth", type=float, default=3.35e12, help="GPU memory bandwidth, B/s (H100 SXM)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    N = 16 if args.quick else 64
    repeats = 1 if args.quick else 3
    why = "--device" if args.device else ("CUDA is available" if cuda else "no CUDA")
    print(f"device {device} ({why}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {N} new "
          f"tokens, no EOS, temperature 1; best of {repeats}; no torch.compile or CUDA graphs")
    print("| model, batch | dtype | sampler | rows timed | new tokens/s | KV-cache speed-up | of bandwidth bound |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rng = random.Random(0)
    small = GPTConfig()
    rows, note = benchmark(f"(a) GPTConfig() {small.n_layer}L/{small.n_embd}d, P=8 G=8, prompt 12-20", small, 8, 8,
                           [rng.randint(12, 20) for _ in range(8)], N, 64 if cuda else (4 if args.quick else 16),
                           device, torch.float32, repeats, args.bandwidth)
    print("\n".join(rows), flush=True)
    notes = [note]
    gpt2 = GPTConfig(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=1024)
    for dtype in (torch.float32, torch.bfloat16) if cuda else (torch.float32,):
        rows, note = benchmark("(b) GPT-2 small 124M, P=8 G=1, prompt 32", gpt2, 8, 1, [32] * 8, N,
                               8 if cuda else (1 if args.quick else 2), device, dtype, repeats, args.bandwidth)
        print("\n".join(rows), flush=True)
        notes.append(note)
    print("The naive reference runs rows one after another, so its rate is measured on the first rows only.")
    if not cuda:  # packed_linears does nothing on CUDA
        print("\n".join(notes))
    if cuda:
        print(f"Bandwidth bound: weights + KV cache read per decode step at {args.bandwidth:.3g} B/s; the time "
              "measured includes the prefill.")
