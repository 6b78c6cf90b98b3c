"""
bench/logprobs.py: per-token log-probs, fused (grpo.fused_token_logprobs) vs plain (grpo.token_logprobs):
forward + backward time and peak memory.

Time: both variants alternate in one process, the best of a few rounds counts. Memory: each variant alone in a
fresh process, the peak it adds above its inputs, gradients included: RSS (VmHWM) on CPU,
torch.cuda.max_memory_allocated on CUDA.

Run: `python bench/logprobs.py` (GPT-2-small and default-CPU-model shapes, about 2.5 minutes on 2 CPU cores),
`--shape cpu` for one shape, `--device cuda` on a GPU (bf16 autocast there by default, as training uses).
"""
import argparse
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from grpo import fused_token_logprobs, token_logprobs  # noqa: E402

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
            logprobs = fused_token_logprobs(hidden, weight, targets, chunk_size=chunk_size)
        else:
            logprobs = token_logprobs(hidden, weight, targets)
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
    best = {"plain": float("inf"), "fused": float("inf")}
    for i in range(rounds + 1):  # round 0 warms up
        for variant in best:
            t = [step(variant, *inputs, dtype, chunk_size)]
            while sum(t) < 0.5:  # short shapes: many steps, the best one counts
                t.append(step(variant, *inputs, dtype, chunk_size))
            if i > 0:
                best[variant] = min(best[variant], *t)
    return best


def main():
    p = argparse.ArgumentParser(description="fused vs plain per-token log-probs: time and peak memory")
    p.add_argument("--memory_of", choices=["fused", "plain"], help="(internal) print one variant's peak memory")
    p.add_argument("--shape", choices=list(SHAPES), default=None, help="one shape (default: all)")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu) or a torch device")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="default: bfloat16 autocast on CUDA (as training would), float32 on CPU")
    p.add_argument("--rounds", type=int, default=2, help="timed rounds of (plain, fused); the best time counts")
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
        for variant in ("plain", "fused"):
            cmd = [sys.executable, __file__, f"--memory_of={variant}", f"--shape={shape}", f"--device={device}",
                   f"--dtype={dtype}"] + ([f"--chunk_size={a.chunk_size}"] if a.chunk_size else [])
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if r.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
            mib[variant] = int(r.stdout.split()[-1]) / 2 ** 20
        sec = best_times(shape, device, getattr(torch, dtype), a.rounds, a.chunk_size)
        B, T, C, V = SHAPES[shape]
        for variant in ("plain", "fused"):
            print(f"| {shape} {SHAPES[shape]} | {variant} | {sec[variant]:.3f} | {mib[variant]:.1f} |", flush=True)
            if mib[variant] < 4 * (B * T + V) * C / 2 ** 20:  # less than the gradients it returns
                print("  ^ less than the gradients it returns: this measurement is wrong")
        ratios.append(f"{shape}: fused/plain time {sec['fused'] / sec['plain']:.2f}x (target <= 1.3), "
                      f"peak memory {mib['fused'] / max(mib['plain'], 1e-9):.3f}x (target <= 0.125 at gpt2)")
    print(f"\nload average (1 min) {load:.1f} before, {os.getloadavg()[0]:.1f} after: other work on the machine "
          "slows the timings")
    print("\n".join(ratios))


if __name__ == "__main__":
    main()
