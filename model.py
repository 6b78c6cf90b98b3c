"""
model.py: a GPT (decoder-only transformer) written from scratch, able to take a KV cache.

The idea: a stack of pre-norm blocks x = x + attn(ln(x)); x = x + mlp(ln(x)) turns tokens into a hidden state
per position, and the tied unembedding turns each hidden state into logits over the next token:
    logits_t = ln_f(h_t) @ wte^T,    p(y_t | y_<t) = softmax(logits_t).
RL needs the log-probability of *every* generated token, so `forward` returns logits at every position (or the
final hidden states, which grpo.py multiplies by the unembedding chunk by chunk to save memory).

Choices, and how this differs from GPT-2 / nanoGPT:
 1. Learned absolute positions (GPT-2's choice) rather than RoPE: one embedding table a student can print.
    Positions are passed per row, so a left-padded prompt starts at position 0 as it would alone.
 2. Padding is handled by a key mask: a real token never attends to a padding slot. Together with per-row
    positions (`positions`), every row of a padded batch gets exactly the logits it would get alone
    (tests/test_model.py).
 3. An optional static KVCache (preallocated, written in place by slot index, never grown with torch.cat).
    `forward(idx, cache=cache, start=s)` writes the new keys/values at slots [s, s+T) and attends to [0, s+T).
 4. A naive `generate` that recomputes the whole context every step: slow and obvious, the reference that
    sample.py's fast sampler is tested against.

Run: `python model.py` prints the parameter count of the default config and a tiny greedy generation.
Shapes: B batch rows, T new tokens, S key slots (= start + T), C channels, H heads, D = C/H head size, V vocab.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 264   # data/tokenizer.py: 256 bytes + 6 special tokens, rounded up to a multiple of 8
    block_size: int = 128   # the longest prompt + completion the model can see
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True       # GPT-2 has biases in its linears and LayerNorms


class KVCache(nn.Module):
    """Preallocated keys and values for every layer, k and v of shape (L, B, H, S_max, D), written by slot index.
    An nn.Module only so that `.to(device)` moves it; it holds buffers, no parameters."""

    def __init__(self, n_layer, batch_size, n_head, max_len, head_dim, device=None, dtype=torch.float32):
        super().__init__()
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def update(self, layer, start, k, v):
        """Write k, v (B, H, T, D) at slots [start, start+T) and return all keys/values up to there."""
        end = start + k.size(2)
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # (B, H, S, D) each


def positions(key_mask):
    """(B, S) positions of a left-padded batch from its key mask (B, S): each row's first real token is at 0, as
    if it were alone. Padding slots get 0 too; no real token ever attends to them."""
    return (key_mask.long().cumsum(1) - 1).clamp(min=0)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.layer, self.n_head, self.dropout = layer, config.n_head, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x, attn_mask, cache=None, start=0):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if cache is not None:
            k, v = cache.update(self.layer, start, k, v)  # (B, H, S, D) each
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)  # (B, H, T, D)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, attn_mask, cache=None, start=0):
        x = x + self.attn(self.ln_1(x), attn_mask, cache, start)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: the unembedding is the embedding
        self.apply(self._init_weights)
        # GPT-2's scaled init: each block adds two residual branches, so shrink their output projections.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self):
        return sum(p.numel() for p in self.parameters()) - self.transformer.wpe.weight.numel()

    def make_cache(self, batch_size, max_len, device=None, dtype=None):
        c = self.config
        p = self.lm_head.weight
        return KVCache(c.n_layer, batch_size, c.n_head, max_len, c.n_embd // c.n_head,
                       device=device or p.device, dtype=dtype or p.dtype)

    def forward(self, idx, pos=None, key_mask=None, cache=None, start=0, return_hidden=False):
        """idx (B, T) token ids; pos (B, T) their positions (default start..start+T-1; see `positions`);
        key_mask (B, S) bool, True where a key slot holds a real token (default: all real).
        With a cache, the T new tokens occupy slots [start, start+T) and attend to every real slot before them.
        Returns logits (B, T, V), or with return_hidden the final normalised hidden states (B, T, C)."""
        B, T = idx.shape
        S = start + T
        if S > self.config.block_size:  # positions never exceed slots, so this bounds them with no device sync
            raise ValueError(f"{S} slots (start {start} + {T} tokens) exceed block_size={self.config.block_size}")
        slots = torch.arange(S, device=idx.device)  # (S,)
        if pos is None:
            pos = slots[start:].expand(B, T)  # (B, T)
        causal = slots[None, :] <= slots[start:, None]  # (T, S): query slot start+i sees key slots <= itself
        if key_mask is None:
            attn_mask = causal[None, None]  # (1, 1, T, S)
        else:
            # A padding query would see no key at all (softmax of nothing is NaN); let every query see itself.
            own = slots[None, :] == slots[start:, None]  # (T, S)
            attn_mask = (causal & (key_mask[:, None, :] | own))[:, None]  # (B, 1, T, S)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x, attn_mask, cache, start)
        x = self.transformer.ln_f(x)  # (B, T, C)
        return x if return_hidden else self.lm_head(x)  # (B, T, C) or (B, T, V)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, eos_id=None, generator=None):
        """The slow, obvious reference sampler: one row (1, T), recompute the whole context every step.
        temperature 0 is greedy. Returns the prompt followed by the new tokens, stopping after eos_id."""
        for _ in range(max_new_tokens):
            logits = self(idx)[:, -1, :]  # (1, V)
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)  # (1, 1)
            else:
                probs = F.softmax(logits / temperature, dim=-1)  # (1, V)
                nxt = torch.multinomial(probs, 1, generator=generator)  # (1, 1)
            idx = torch.cat([idx, nxt], dim=1)
            if eos_id is not None and int(nxt) == eos_id:
                break
        return idx


if __name__ == "__main__":
    torch.manual_seed(0)
    model = GPT(GPTConfig())
    print(f"GPT {GPTConfig()}: {model.num_params() / 1e6:.2f}M parameters (without positions)")
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=8, temperature=0)
    print("greedy continuation of [1, 2, 3] from an untrained model:", out[0].tolist())
