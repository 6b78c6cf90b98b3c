"""
data/tokenizer.py: an offline tiktoken tokenizer in which every byte is its own token.

The idea: arithmetic is easiest to learn when every digit and operator is one token, so the base vocabulary is
the 256 single bytes (tiktoken "mergeable ranks" with no merges at all), plus six special tokens:
    <|endoftext|> (EOS, trainable: the model must learn to stop), <|pad|> (never trained on, never EOS),
    <think> </think> <answer> </answer> (the R1-Zero response format).
ids 0..255 are bytes, 256..261 the special tokens; the model's vocabulary is rounded up to 264 (a multiple of 8).
Round trip: decode(encode(s)) == s for every string (non-ASCII text becomes several byte tokens).

GPT-2's BPE (`get_tokenizer("gpt2")`) is for users who load GPT-2 weights: tiktoken needs its files in the local
cache (TIKTOKEN_CACHE_DIR), because nothing here may download. Its specials are appended after id 50256.

Run: `python data/tokenizer.py` prints a tokenized example.
"""
import tiktoken

SPECIALS = ("<|endoftext|>", "<|pad|>", "<think>", "</think>", "<answer>", "</answer>")
EOS, PAD, THINK, END_THINK, ANSWER, END_ANSWER = SPECIALS
VOCAB_SIZE = 264  # 256 + 6, rounded up to a multiple of 8 for tidy matrix shapes


def get_tokenizer(name="bytes"):
    """Returns a tiktoken.Encoding. name: "bytes" (default, offline) or "gpt2" (needs cached BPE files)."""
    if name == "bytes":
        ranks = {bytes([i]): i for i in range(256)}
        specials = {s: 256 + i for i, s in enumerate(SPECIALS)}
        # No merges exist, so the split pattern only decides the pieces BPE sees; every byte ends up alone.
        return tiktoken.Encoding("arith-bytes", pat_str=r"\s+|\S+", mergeable_ranks=ranks, special_tokens=specials)
    if name == "gpt2":
        try:
            base = tiktoken.get_encoding("gpt2")
        except Exception as e:  # tiktoken raises a bare network error when its files are not cached
            raise RuntimeError("GPT-2's BPE files are not in tiktoken's cache and cannot be downloaded here; "
                               "copy them into TIKTOKEN_CACHE_DIR or use the default 'bytes' tokenizer") from e
        specials = {EOS: base.eot_token}
        specials.update({s: base.n_vocab + i for i, s in enumerate(SPECIALS[1:])})
        return tiktoken.Encoding("gpt2-think", pat_str=base._pat_str, mergeable_ranks=base._mergeable_ranks,
                                 special_tokens=specials)
    raise ValueError(f"unknown tokenizer {name!r}: use 'bytes' or 'gpt2'")


def encode(enc, text):
    """Our own data may contain the special tokens as text; model output is decoded, never re-encoded."""
    return enc.encode(text, allowed_special="all")


def decode(enc, ids):
    """Model output may contain ids the tokenizer lacks (the vocabulary is padded to 264): decode those as U+FFFD
    so the verifier sees a bad character instead of the decoder raising."""
    known = [t if t < enc.n_vocab else None for t in ids]
    return b"".join(enc.decode_single_token_bytes(t) if t is not None else "\ufffd".encode() for t in known
                    ).decode("utf-8", errors="replace")


if __name__ == "__main__":
    enc = get_tokenizer()
    text = "What is 47+85?\n<think>7+5+0=12 r=2</think><answer>132</answer><|endoftext|>"
    ids = encode(enc, text)
    print(f"vocab {enc.n_vocab} (model uses {VOCAB_SIZE}); specials", {s: enc.encode_single_token(s) for s in SPECIALS})
    print(f"{len(ids)} tokens:", ids)
    assert enc.decode(ids) == text
