"""
bench/sample.py: new tokens per second of sample.sample() (KV cache) against the naive recompute-everything
reference (model.generate) and, when transformers is importable, its GPT2LMHeadModel.generate with our weights.

transformers is not a dependency: install it yourself to get its rows (its logits are checked against ours first).
On CUDA the first row also gives the fraction of the memory-bandwidth bound: the bytes a decode step must read at
least (every weight once, plus the keys and values cached so far) at --bandwidth, over the time measured.

Run: `python bench/sample.py [--quick] [--device cuda] [--threads 1]`; about 3 minutes on a 2-core CPU.
"""
import argparse
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import GPT, GPTConfig  # noqa: E402
from sample import sample  # noqa: E402

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # HF stores (in, out)


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
    sd = {k: v.t() if k.endswith(CONV1D) else v for k, v in model.state_dict().items()}
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
    """Times sample(), the naive reference and (if installed) transformers on one batch; returns the table rows."""
    torch.manual_seed(0)
    model = GPT(config).to(device, dtype).eval()
    g = torch.Generator(device).manual_seed(0)
    prompts = [torch.randint(0, config.vocab_size, (n,)).tolist() for n in prompt_lens]
    B, N = n_prompts * group_size, max_new_tokens
    rows = [torch.tensor([p], device=device) for p in prompts for _ in range(group_size)][:naive_rows]

    def naive():  # model.generate: one row at a time, the whole context recomputed for every new token
        for row in rows:
            model.generate(row, N, temperature=1.0, generator=g)

    variants = [("KV-cache sample()", B, lambda: sample(model, prompts, group_size, N, generator=g))]
    variants.append(("naive model.generate", len(rows), naive))
    hf = hf_generate(model, prompts, group_size, N)
    if hf is not None:
        variants.append(("transformers generate", B, hf))
        hf()  # warm up (allocator, kernels, thread pools)
    sample(model, prompts, group_size, 4, generator=g)
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
    return [f"| {name} | {dt} | {sampler} | {n} | {rate:,.0f} | {kv_rate / rate:.2f}× | {bound if i == 0 else ''} |"
            for i, (sampler, n, rate) in enumerate(results)]


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
    rows = benchmark(f"(a) GPTConfig() {small.n_layer}L/{small.n_embd}d, P=8 G=8, prompt 12-20", small, 8, 8,
                           [rng.randint(12, 20) for _ in range(8)], N, 64 if cuda else (4 if args.quick else 16),
                           device, torch.float32, repeats, args.bandwidth)
    print("\n".join(rows), flush=True)
    gpt2 = GPTConfig(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=1024)
    for dtype in (torch.float32, torch.bfloat16) if cuda else (torch.float32,):
        rows = benchmark("(b) GPT-2 small 124M, P=8 G=1, prompt 32", gpt2, 8, 1, [32] * 8, N,
                               8 if cuda else (1 if args.quick else 2), device, dtype, repeats, args.bandwidth)
        print("\n".join(rows), flush=True)
    print("The naive reference runs rows one after another, so its rate is measured on the first rows only.")
    if cuda:
        print(f"Bandwidth bound: weights + KV cache read per decode step at {args.bandwidth:.3g} B/s; the time "
              "measured includes the prefill.")
