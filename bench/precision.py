"""
bench/precision.py: how far the trainer's bf16 log-probs are from the sampler's float32 ones, on a trained model.

Why it matters: pi_old is the sampler's log-probs, and the first pass over a batch is meant to be on-policy
(rho = 1). Under bf16 autocast the trainer computes the same tokens' log-probs in another precision, and the gap
is rho - 1 on every token: the clip then acts on a batch that is on-policy. train.py therefore takes the first
pass's own log-probs as pi_old under autocast (rho = 1 exactly); this script measures the gap it sidesteps, which
train.py logs as `dlp`.

Run: `python bench/precision.py --ckpt out/ckpt.pt` (CPU bf16 autocast emulates the GPU's, a few seconds), or
`--device cuda` on a GPU.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checkpoint import load_checkpoint  # noqa: E402
from data.tasks import generate_problems  # noqa: E402
from data.tokenizer import EOS_ID, PAD_ID, encode  # noqa: E402
from model import GPT, GPTConfig, positions  # noqa: E402
from sample import sample  # noqa: E402
from grpo import fused_token_logprobs  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="out/ckpt.pt")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--prompts", type=int, default=32)
    args = ap.parse_args()
    ckpt = load_checkpoint(args.ckpt)
    model = GPT(GPTConfig(**ckpt["model_config"])).to(args.device).eval()
    model.load_state_dict(ckpt["model"])
    cfg = ckpt["config"]
    problems = generate_problems(args.prompts, seed=5, families=cfg["families"].split(","), digits=cfg["digits"])
    s = sample(model, [encode(p.prompt) for p in problems], cfg["group_size"], cfg["max_new_tokens"],
               eos_id=EOS_ID, pad_id=PAD_ID, generator=torch.Generator(args.device).manual_seed(0))
    mask = s.mask[:, 1:].bool()  # (B, T)
    print(f"{args.ckpt}: {mask.sum().item()} sampled tokens (float32 sampler), log pi_trainer - log pi_sampler:")
    for name, dtype in (("float32", None), ("bf16 autocast", torch.bfloat16)):
        with torch.no_grad(), torch.autocast(torch.device(args.device).type, dtype=dtype or torch.float32,
                                             enabled=dtype is not None):
            hidden = model(s.tokens[:, :-1], pos=positions(s.key_mask)[:, :-1], key_mask=s.key_mask[:, :-1],
                           return_hidden=True)  # (B, T, C)
            logprobs = fused_token_logprobs(hidden, model.lm_head.weight, s.tokens[:, 1:])  # (B, T)
        gap = (logprobs - s.logprobs[:, 1:])[mask]
        print(f"  trainer in {name:14s} max |gap| {gap.abs().max().item():.2e}, mean {gap.abs().mean().item():.2e}, "
              f"share beyond the clip's log(1.2) {(gap.abs() > 0.1823).float().mean().item():.4f}")


if __name__ == "__main__":
    main()
