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
    and rows of one group differ because their uniforms do.
 2. `logprobs` are the log-probabilities of the sampled tokens under the distribution they were drawn from:
    log_softmax(logits / temperature), renormalised over the kept set when top_k / top_p truncate it (tokens
    outside it cannot be drawn). With the defaults (temperature 1, no truncation) this is exactly what grpo.py
    computes from the same weights, so on-policy importance ratios are 1. Greedy (temperature 0) reports the
    untempered log_softmax(logits), since the point mass it draws from would always say 0.

Run: `python sample.py` benchmarks the KV-cache sampler against the naive recompute-everything reference.
Shapes: P prompts, G group size, B = P·G rows, Lp padded prompt length, N max_new_tokens, L = Lp + N, V vocab.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F


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

    # Prefill each distinct prompt once, then copy its keys/values to its G rows. Only the last position needs
    # logits (with GPT-2's 50k vocabulary the unembedding is a third of a forward pass's multiply-adds).
    pcache = model.make_cache(P, Lp)
    hidden = model(prompt, pos=ppos, mask=pvalid, cache=pcache, return_hidden=True)[:, -1]  # (P, C)
    logits = model.lm_head(hidden).repeat_interleave(G, dim=0)  # (B, V)
    cache = model.make_cache(B, Lp + N)
    cache.k[:, :, :, :Lp] = pcache.k.repeat_interleave(G, dim=1)
    cache.v[:, :, :, :Lp] = pcache.v.repeat_interleave(G, dim=1)

    tokens = torch.full((B, Lp + N), pad_id, dtype=torch.long, device=device)  # (B, L)
    tokens[:, :Lp] = prompt.repeat_interleave(G, dim=0)
    valid = torch.zeros(B, Lp + N, dtype=torch.bool, device=device)  # (B, L)
    valid[:, :Lp] = pvalid.repeat_interleave(G, dim=0)
    logprobs = torch.zeros(B, Lp + N, device=device)  # (B, L)
    pos = ppos[:, -1].repeat_interleave(G) + 1  # (B,) position of the first new token
    done = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
    keys = valid.clone()  # (B, L) key mask for decoding: completions count as real even after they finish
    keys[:, Lp:] = True
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
