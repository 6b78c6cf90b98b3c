"""
bench/speed.py: how close the default run's two stages are to this machine's limit, and where their compute goes.

For a pretraining step and an RL step of the default run it reports:
  real share   the share of the token positions the training forward computes that hold a real token (not padding)
  FLOP/s       achieved by the training forward + backward: 6 * params * positions + 12 * layers * T * C * positions
               (the attention scores) per second, counted over the positions computed and over the real ones
  peak         the machine's matmul FLOP/s at the same thread count: the best of a few shapes the model multiplies
               (B*T x C times C x 4C) and one big square matmul
The RL step is split into its parts (sampling, grading, the update). Batches are built exactly as train.py builds
them; the RL batch is sampled from the checkpoint given (a pretrained model, so lengths are realistic). Each step is
timed with one padded batch and with micro-batches of rows of similar length (train.by_length, --micro_batch):
the same loss and gradient, less padding.

Run: `python bench/speed.py --ckpt out/ckpt.pt` (about a minute; nothing else should run meanwhile), `--threads N`.
"""
import argparse
import dataclasses
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import config  # noqa: E402
import train  # noqa: E402
from checkpoint import load_checkpoint, new_run  # noqa: E402
from data.tasks import generate_problems, pretrain_batch  # noqa: E402
from data.tokenizer import EOS_ID, PAD_ID  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from sample import sample  # noqa: E402
from verify import grade_samples  # noqa: E402
from advantage import group_advantages  # noqa: E402


def best_of(fn, repeats):
    """The fastest of `repeats` calls, in seconds (the first call warms up and is not counted)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_peak(shapes, repeats=5):
    """FLOP/s of torch.mm at each (M, K, N) shape: 2 M K N per product."""
    out = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        out[(m, k, n)] = 2 * m * k * n / best_of(lambda: torch.mm(a, b), repeats)
    return out


def flops(model, positions, T):
    """Training (forward + backward) FLOPs over `positions` token positions of sequences padded to T."""
    c = model.config
    return (6 * model.num_params() + 12 * c.n_layer * T * c.n_embd) * positions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="out/ckpt.pt", help="a pretrained checkpoint of the default run")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--micro_batch", type=int, nargs="*", default=[64, 32, 16], help="micro-batch sizes to time")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, _ = config.configure([f"--init_from={args.ckpt}", "--device=cpu"])
    ckpt = load_checkpoint(args.ckpt)
    eval_set, eval_ids, pool, pool_ids = train.make_task(cfg, ckpt)
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    off = torch.autocast("cpu", enabled=False)
    print(f"{torch.get_num_threads()} threads, model {model.num_params() / 1e6:.2f}M parameters, "
          f"{cfg.n_layer} layers, {cfg.n_embd} channels")

    c = model.config
    peaks = matmul_peak([(64 * 64, c.n_embd, 4 * c.n_embd), (64 * 64, 4 * c.n_embd, c.n_embd),
                         (64 * 64, c.n_embd, 3 * c.n_embd), (1024, 1024, 1024)], args.repeats)
    peak = max(peaks.values())
    print("matmul FLOP/s: " + ", ".join(f"{m}x{k}x{n} {f / 1e9:.1f} G" for (m, k, n), f in peaks.items()))

    # ---- pretraining: one step on a batch as train.pretrain builds it
    rng = random.Random(0)
    problems = generate_problems(cfg.batch_size, seed=1, families=cfg.families.split(","), digits=cfg.digits)
    x, y = pretrain_batch(problems, rng, cfg.think_prob, cfg.error_prob)  # (B, T) each
    real = int((x != PAD_ID).sum())  # the prompt and the response are real; PAD is padding
    optimizer = train.make_optimizer(model, 1e-9, 0.0)
    for micro_batch in [len(x)] + args.micro_batch:
        parts = train.by_length((x != PAD_ID).sum(1), micro_batch)
        computed = sum(len(rows) * width for rows, width in parts)
        step_s = best_of(lambda: train.pretrain_step(model, optimizer, x, y, 1e-9, 1.0, off, micro_batch=micro_batch),
                         args.repeats)
        report(f"pretraining step, micro-batches of {micro_batch:3d} rows", model, computed, real, x.shape[1],
               step_s, peak)

    # ---- RL: one step from the checkpoint, its parts timed
    run = new_run(cfg.seed, len(pool))
    G = cfg.group_size
    idx, uniforms = train.draw_prompts(run, len(pool), cfg)
    t0 = time.perf_counter()
    samples = sample(model.eval(), [pool_ids[i] for i in idx], G, cfg.max_new_tokens, cfg.temperature, EOS_ID,
                     uniforms=uniforms, pad_id=PAD_ID)
    sample_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    texts, grades = grade_samples(samples, [pool[i].answer for i in idx for _ in range(G)])
    grade_s = time.perf_counter() - t0
    advantages = group_advantages(torch.tensor([float(g.correct) for g in grades]), G)
    still = torch.optim.SGD(model.parameters(), lr=0.0)
    B, L = samples.tokens.shape
    real = int(samples.key_mask[:, :-1].sum())
    print(f"RL step ({B} rows, {L - 1} positions each): sampling {sample_s:.2f} s, grading {grade_s:.3f} s")
    for micro_batch in [B] + args.micro_batch:
        knobs = dataclasses.replace(cfg, micro_batch=micro_batch)
        parts = train.by_length(samples.prompt_len + samples.lengths, micro_batch)
        computed = sum(len(rows) * (width - 1) for rows, width in parts)
        update_s = best_of(lambda: train.grpo_update(model, still, samples, advantages, None, knobs, off),
                           args.repeats)
        report(f"RL update, micro-batches of {micro_batch:3d} rows", model, computed, real, L - 1, update_s, peak)


def report(name, model, positions, real, T, seconds, peak):
    """One line: real share of the positions computed, seconds, FLOP/s over those positions and over the real ones
    (attention counted at the padded length T, an upper bound)."""
    computed, useful = flops(model, positions, T) / seconds, flops(model, real, T) / seconds
    print(f"{name}: {real} real of {positions} positions computed ({real / positions:.0%}), {seconds:.3f} s, "
          f"{computed / 1e9:.1f} GFLOP/s computed ({computed / peak:.0%} of peak), {useful / 1e9:.1f} GFLOP/s on "
          f"real tokens ({useful / peak:.0%})")


if __name__ == "__main__":
    main()
