"""
data/tokenizer.py: an offline tiktoken tokenizer in which every byte is its own token.

The idea: arithmetic is easiest to learn when every digit and operator is one token, so the base vocabulary is
the 256 single bytes (tiktoken "mergeable ranks" with no merges at all), plus six special tokens:
    <|endoftext|> (EOS, trainable: the model must learn to stop), <|pad|> (never trained on, never EOS),
    <think> </think> <answer> </answer> (the R1-Zero response format).
ids 0..255 are bytes, 256..261 the special tokens; the model's vocabulary is rounded up to 264 (a multiple of 8).
Round trip: decode(encode(s)) == s for every string (non-ASCII text becomes several byte tokens).

Run: `python data/tokenizer.py` prints a tokenized example.
"""
import tiktoken

SPECIALS = ("<|endoftext|>", "<|pad|>", "<think>", "</think>", "<answer>", "</answer>")
EOS, PAD, THINK, END_THINK, ANSWER, END_ANSWER = SPECIALS
EOS_ID, PAD_ID = 256 + SPECIALS.index(EOS), 256 + SPECIALS.index(PAD)
VOCAB_SIZE = 264  # 256 + 6, rounded up to a multiple of 8 for tidy matrix shapes


def get_tokenizer():
    """The byte-level tiktoken.Encoding. No merges exist, so the split pattern only decides the pieces BPE sees;
    every byte ends up alone."""
    ranks = {bytes([i]): i for i in range(256)}
    specials = {s: 256 + i for i, s in enumerate(SPECIALS)}
    return tiktoken.Encoding("arith-bytes", pat_str=r"\s+|\S+", mergeable_ranks=ranks, special_tokens=specials)


ENC = get_tokenizer()


def encode(text):
    """Our own data may contain the special tokens as text; model output is decoded, never re-encoded."""
    return ENC.encode(text, allowed_special="all")


def decode(ids):
    """Model output may contain ids the tokenizer lacks (the vocabulary is padded to 264): decode those as U+FFFD
    so the verifier sees a bad character instead of the decoder raising."""
    return b"".join(ENC.decode_single_token_bytes(t) if t < ENC.n_vocab else "\ufffd".encode() for t in ids
                    ).decode("utf-8", errors="replace")


if __name__ == "__main__":
    text = "What is 47+85?\n<think>7+5+0=12 r=2</think><answer>132</answer><|endoftext|>"
    ids = encode(text)
    print(f"vocab {ENC.n_vocab} (model uses {VOCAB_SIZE}); specials", {s: ENC.encode_single_token(s) for s in SPECIALS})
    print(f"{len(ids)} tokens:", ids)
    assert decode(ids) == text
