"""
sample.py: KV-cache sampling of G completions for each of P prompts, by hand.

The idea: GRPO spends much of its time here. Each distinct prompt is run through the model once (prefill) and its
keys/values are copied to its G rows of a preallocated cache; then all B = P·G rows advance one token per step
(decode), each step attending to the cached keys instead of recomputing the whole context:
    prefill: K, V[..., :Lp] = f(prompt)           decode: y_t ~ softmax(logits(y_{t-1} | K, V[..., :Lp+t]) / τ)
Prompts of different lengths are left-padded to Lp; a key mask hides the padding and every row carries its own
positions, so each row gets exactly the distribution it would get alone.

Randomness and log-probs:
 1. All uniforms are drawn up front, U (B, max_new_tokens) from `generator`, and row r draws its token at step t
    by inverting the CDF at U[r, t] (`draw`). So a row's sample depends only on its own row of U: same seed, same
    tokens, and rows of one group differ because their uniforms do. (A prompt sampled alone draws exactly what
    it draws as the first prompt of a batch; elsewhere in the batch it gets other rows of U.)
 2. `logprobs` are the log-probabilities of the sampled tokens under the distribution they were drawn from,
    log_softmax(logits / temperature). That is exactly what grpo.py computes from the same weights, so on-policy
    importance ratios are 1. Greedy (temperature 0) reports the untempered log_softmax(logits), since the point
    mass it draws from would always say 0.
 3. No top-k or top-p: they sample from a truncated distribution, and the trainer, which scores the full one,
    would then see ratios below 1 on every token of an "on-policy" batch.
 4. Forced tokens (`force`): a rule, called after every step with the completions so far, may hand a row tokens
    to append next: a thinking budget's `</think><answer>` (Qwen3's "termination string", evaluation.cut_thinking)
    or a tool's output. They were not sampled, so they are not the policy's actions: mask 0 (the loss skips them)
    and log-prob 0. The rest of the row is sampled exactly as if they had been part of the prompt
    (tests/test_sample.py checks that).

Speed: a decode step does little arithmetic per byte it reads (each weight meets only B rows, each cached key
one query), so it is bound by memory reads. The loop asks the device nothing per step on CUDA (`stop_every`),
so kernels queue up while the host runs ahead. bench/sample.py measures it against the naive reference.

Run: `python sample.py` samples one prompt's group from an untrained model and shows each row's tokens and
log-probs next to the full forward pass's. Tests: `python -m pytest tests/test_sample.py` (a few seconds).
Shapes: P prompts, G group size, B = P·G rows, Lp padded prompt length, N max_new_tokens, V vocab, L = Lp + N
(Samples are trimmed to Lp + the longest completion).
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model import GPT, GPTConfig, positions


@dataclass
class Samples:
    tokens: torch.Tensor     # (B, L) long: left-padded prompt, then the completion, then pad_id
    key_mask: torch.Tensor   # (B, L) bool: real tokens (prompt and completion up to EOS), the model's key mask
    mask: torch.Tensor       # (B, L) float: the loss mask, 1 on the tokens the policy drew (up to and including
                             # EOS); 0 on the prompt, the padding and forced tokens
    logprobs: torch.Tensor   # (B, L) float: log-prob of each generated token as sampled (0 where mask is 0)
    finished: torch.Tensor   # (B,) bool: ended with EOS (False: truncated at max_new_tokens)
    lengths: torch.Tensor    # (B,) long: completion lengths, EOS and forced tokens included
    prompt_len: int          # Lp: completions start at this column


def draw(logits, u, temperature):
    """One token per row by inverse CDF at the uniforms u (B,): token i is drawn when cdf[i-1] <= u·total <
    cdf[i], total = cdf[V-1]. Never a token of probability 0, even when u·total rounds up to the total.
    logits (B, V). Returns tokens (B,) and their log-probs (B,); temperature 0 is greedy (argmax)."""
    if temperature == 0:
        tok = logits.argmax(-1)  # (B,)
        return tok, F.log_softmax(logits.float(), -1).gather(-1, tok[:, None])[:, 0]
    logp = F.log_softmax(logits.float() / temperature, -1)  # (B, V)
    cdf = logp.exp().cumsum(-1)  # (B, V)
    tok = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]  # (B,)
    # u·total can round up to total (u is at most 1 - 2^-24): then take the last token that has any mass.
    last = (cdf < cdf[:, -1:]).sum(-1)  # (B,) where the CDF reaches its total
    tok = torch.minimum(tok, last)
    return tok, logp.gather(-1, tok[:, None])[:, 0]


def prefill(model, prompt, key_mask, group_size, max_len):
    """Run each padded prompt (P, Lp) once and copy its keys/values to its G rows of a cache for max_len slots.
    Returns the cache and the logits of each row's next token (B, V): only the last position needs logits."""
    P, Lp = prompt.shape
    pcache = model.make_cache(P, Lp)
    hidden = model(prompt, pos=positions(key_mask), key_mask=key_mask, cache=pcache, return_hidden=True)  # (P, Lp, C)
    logits = model.lm_head(hidden[:, -1]).repeat_interleave(group_size, dim=0)  # (B, V)
    cache = model.make_cache(P * group_size, max_len)
    cache.k[:, :, :, :Lp] = pcache.k.repeat_interleave(group_size, dim=1)
    cache.v[:, :, :, :Lp] = pcache.v.repeat_interleave(group_size, dim=1)
    return cache, logits


def decode_step(model, tok, pos, key_mask, cache, start):
    """Feed one new token per row (B,) at slot `start`, position pos (B,); key_mask (B, start + 1) says which
    slots hold real tokens. Returns the logits of the token after it (B, V)."""
    return model(tok[:, None], pos=pos[:, None], key_mask=key_mask, cache=cache, start=start)[:, -1]


@torch.no_grad()
def sample(model, prompts, group_size, max_new_tokens, temperature=1.0, eos_id=None, generator=None, pad_id=0,
           uniforms=None, force=()):
    """prompts: P lists of token ids (lengths may differ). Returns Samples for B = P·group_size rows, the G rows
    of prompt p consecutive (rows p·G ... p·G + G − 1). The uniforms (B, max_new_tokens) the rows draw with come
    from `generator`, unless given. Put the model in eval mode first: dropout would make the returned log-probs
    disagree with the distribution the tokens were drawn from.
    force: rules (a list, maybe empty), each force(completions) -> {row: [token ids]}, called after every step with
    the completions so far (B, t) long, forced tokens included; each listed row is handed those tokens as its next
    ones (a thinking budget, a tool's output). Forced tokens use up their steps' uniforms, count in `lengths`, and
    have mask 0 and log-prob 0: the policy did not choose them."""
    if len(prompts) == 0 or min(len(p) for p in prompts) == 0:
        raise ValueError("sample() needs at least one prompt, and no prompt may be empty")
    if group_size < 1 or max_new_tokens < 1:
        raise ValueError(f"group_size ({group_size}) and max_new_tokens ({max_new_tokens}) must be at least 1")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
    device = model.lm_head.weight.device
    P, G, N = len(prompts), group_size, max_new_tokens
    B, Lp = P * G, max(len(p) for p in prompts)
    if Lp + N > model.config.block_size:
        raise ValueError(f"prompt length {Lp} + max_new_tokens {N} exceeds the model's block_size "
                         f"{model.config.block_size}")
    if uniforms is None:
        uniforms = torch.rand(B, N, generator=generator,
                              device=generator.device if generator is not None else "cpu")
    if uniforms.shape != (B, N):
        raise ValueError(f"uniforms must be (B, max_new_tokens) = ({B}, {N}), got {tuple(uniforms.shape)}")
    u = uniforms.to(device)  # (B, N)

    # Left-pad the prompts so every row's completion starts at column Lp.
    prompt = torch.tensor([[pad_id] * (Lp - len(p)) + list(p) for p in prompts], device=device)  # (P, Lp)
    prompt_mask = torch.tensor([[False] * (Lp - len(p)) + [True] * len(p) for p in prompts], device=device)  # (P, Lp)
    tokens = torch.full((B, Lp + N), pad_id, dtype=torch.long, device=device)  # (B, L)
    tokens[:, :Lp] = prompt.repeat_interleave(G, dim=0)
    key_mask = torch.zeros(B, Lp + N, dtype=torch.bool, device=device)  # (B, L)
    key_mask[:, :Lp] = prompt_mask.repeat_interleave(G, dim=0)
    logprobs = torch.zeros(B, Lp + N, device=device)  # (B, L)
    pos = positions(key_mask[:, :Lp])[:, -1] + 1  # (B,) position of the first new token
    keys = key_mask.clone()  # (B, L) key mask for decoding: completions count as real even after they finish
    keys[:, Lp:] = True
    done = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
    chosen = torch.ones(B, Lp + N, dtype=torch.bool, device=device)  # (B, L) False where a token was forced
    pending = [[] for _ in range(B)]  # per row, the forced tokens still to hand over

    cache, logits = prefill(model, prompt, prompt_mask, G, Lp + N)
    stop_every = 1 if device.type == "cpu" else 16  # asking whether all rows are done syncs a GPU with the host
    for t in range(N):
        tok, lp = draw(logits, u[:, t], temperature)  # (B,), (B,)
        if force:
            tok, lp = hand_over(pending, tok, lp, chosen[:, Lp + t])
        tok = tok.masked_fill(done, pad_id)  # finished rows stop changing
        tokens[:, Lp + t] = tok
        logprobs[:, Lp + t] = lp.masked_fill(done, 0.0)
        key_mask[:, Lp + t] = ~done
        if eos_id is not None:
            done = done | (tok == eos_id)
        for rule in force:
            for r, ids in rule(tokens[:, Lp:Lp + t + 1]).items():
                pending[r].extend(ids)
        if t == N - 1 or (eos_id is not None and (t + 1) % stop_every == 0 and bool(done.all())):
            break
        logits = decode_step(model, tok, pos + t, keys[:, :Lp + t + 1], cache, Lp + t)  # (B, V)
    mask = key_mask & chosen
    mask[:, :Lp] = False
    lengths = key_mask[:, Lp:].sum(1)  # (B,)
    L = Lp + int(lengths.max())  # trim the columns no row reached
    return Samples(tokens[:, :L], key_mask[:, :L], mask[:, :L].float(), logprobs[:, :L], done, lengths, Lp)


def hand_over(pending, tok, lp, chosen):
    """Rows with forced tokens pending take the next one instead of their draw: tok and lp (B,) get it and log-prob
    0, chosen (B,) False. pending (one list per row) is consumed in place."""
    for r, queue in enumerate(pending):
        if queue:
            tok[r], lp[r], chosen[r] = queue.pop(0), 0.0, False
    return tok, lp


def budget_rule(n, open_id, forced):
    """A force rule for sample(): a row that has written open_id and then n more tokens, none of them forced[0],
    is handed `forced` (a thinking budget: after <think> and n tokens, </think><answer>)."""
    def force(completions):  # (B, t)
        opened = (completions == open_id).cumsum(1) > 0  # (B, t) from the first open_id on
        fire = (opened.sum(1) - 1 == n) & ~(completions == forced[0]).any(1)  # (B,) n tokens since, never closed
        return {r: list(forced) for r in fire.nonzero()[:, 0].tolist()}
    return force


if __name__ == "__main__":
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():  # an untrained GPT is nearly uniform; sharpen it so the group's rows look different
        model.transformer.wte.weight.mul_(4)
    s = sample(model, [[1, 2, 3]], group_size=4, max_new_tokens=6, eos_id=0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # what the trainer will compute for the same tokens, in one forward pass
        full = F.log_softmax(model(s.tokens, pos=positions(s.key_mask), key_mask=s.key_mask), -1)  # (B, L, V)
    full = full[:, :-1].gather(-1, s.tokens[:, 1:, None])[..., 0]  # (B, L-1) log-prob of each next token
    print(f"prompt [1, 2, 3], G=4, EOS=0; {'row':>3}  completion  |  sampler's log-probs  |  full forward's")
    for r in range(4):
        n = int(s.lengths[r])
        cols = slice(s.prompt_len, s.prompt_len + n)
        print(f"{r:3d}  {s.tokens[r, cols].tolist()}  finished={bool(s.finished[r])}\n     "
              f"{[round(x, 3) for x in s.logprobs[r, cols].tolist()]}\n     "
              f"{[round(x, 3) for x in full[r, s.prompt_len - 1:s.prompt_len - 1 + n].tolist()]}")
