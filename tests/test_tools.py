"""tools.py: the calculator the policy may call. A call's result is forced text (mask 0, log-prob 0) that leaves
the rest of the row exactly as if it had been typed in; hostile calls get `?>>` at once and run nothing; the
teacher's calculator output is never a pretraining target."""
import os
import random
import time

import pytest
import torch

import tools
import train
from data.tasks import generate_problems, pretrain_batch, tool_pieces
from data.tokenizer import EOS_ID, PAD_ID, decode, encode
from model import GPT, GPTConfig
from sample import sample


def tiny(seed=0):
    """A random GPT over the real byte vocabulary, its weights scaled so that rows differ."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8)
    return model


def typist(text):
    """A force rule standing in for a policy that writes `text` right after its first token."""
    return lambda completions: {r: encode(text) for r in range(len(completions))} if completions.shape[1] == 1 else {}


def test_a_call_is_answered_token_for_token_as_if_typed_in_by_hand():
    model, G, N, prompt = tiny(), 4, 30, encode("What is 12*34?\n")
    u = torch.rand(G, N, generator=torch.Generator().manual_seed(1))
    s = sample(model, [prompt], G, N, eos_id=EOS_ID, uniforms=u, force=[typist("<<12*34="), tools.calculator])
    Lp = s.prompt_len
    for r in range(G):
        row = s.tokens[r, Lp:Lp + int(s.lengths[r])].tolist()
        assert decode(row[1:14]) == "<<12*34=408>>"  # the policy's call (typed), then the environment's answer
        assert (s.mask[r, Lp + 1:Lp + 14] == 0).all() and (s.logprobs[r, Lp + 1:Lp + 14] == 0).all()
        assert s.mask[r, Lp] == 1 and (s.mask[r, Lp + 14:Lp + len(row)] == 1).all()
        if len(row) == 14:
            continue
        by_hand = sample(model, [prompt + row[:14]], 1, N - 14, eos_id=EOS_ID, uniforms=u[r:r + 1, 14:])
        n = int(by_hand.lengths[0])
        assert row[14:] == by_hand.tokens[0, by_hand.prompt_len:by_hand.prompt_len + n].tolist()
        torch.testing.assert_close(s.logprobs[r, Lp + 14:Lp + len(row)],
                                   by_hand.logprobs[0, by_hand.prompt_len:by_hand.prompt_len + n], atol=1e-5, rtol=0)


def test_several_calls_in_one_row_and_calls_counted():
    """A typist that writes each call after the previous one's answer, as a policy would."""
    segments = ["<<2*3=", " and <<7-(9)=", " and <<x="]

    def typist_in_turns(completions):
        texts = [decode(row) for row in completions.tolist()]
        done = [t.count(">>") for t in texts]
        return {r: encode(segments[d]) for r, (t, d) in enumerate(zip(texts, done))
                if d < len(segments) and (completions.shape[1] == 1 if d == 0 else t.endswith(">>"))}
    model = tiny(1)
    s = sample(model, [encode("Q\n")], 2, 50, eos_id=EOS_ID, generator=torch.Generator().manual_seed(0),
               force=[typist_in_turns, tools.calculator])
    text = decode(s.tokens[0, s.prompt_len:].tolist())
    assert "<<2*3=6>> and <<7-(9)=-2>> and <<x=?>>" in text
    assert tools.calls(text) == (3, 1)  # three calls, one malformed


@pytest.mark.parametrize("expression", ["9" * 1000, "(" * 500 + "1" + ")" * 500, "2**10", "x", "exp(1)", "1/0",
                                        "__import__('os').system('touch /tmp/pwned')", "7*-8", "1e300", "9^9^9",
                                        "".join(["1+"] * 300) + "1", "\u0661\u0662"])
def test_hostile_calls_get_the_error_result_quickly_and_run_nothing(expression, tmp_path):
    t0 = time.perf_counter()
    assert tools.answer(expression) == "?>>"
    assert time.perf_counter() - t0 < 0.01
    assert not os.path.exists("/tmp/pwned")  # the payload never ran


def test_the_calculator_computes_integers_exactly():
    assert tools.answer("47*85") == "3995>>" and tools.answer("12*(3+4)-5") == "79>>"
    assert tools.answer("-7*8") == "-56>>" and tools.answer("123456789*987654321") == "121932631112635269>>"
    assert tools.answer(" 2 * 3 ") == "6>>"


def test_pretraining_never_takes_the_calculators_output_as_a_target():
    problems = generate_problems(8, seed=0, families=("mul", "lin", "poly"), digits=2)
    x, y = pretrain_batch(problems, random.Random(0), 1.0, 0.0, tool_prob=1.0)
    for i in range(len(problems)):
        targets = decode([t for t in y[i].tolist() if t >= 0])
        inputs = decode([t for t in x[i].tolist() if t != PAD_ID])
        assert "<<" in inputs and ">>" in inputs  # the calls are in the text the model reads ...
        assert ">>" not in targets  # ... and the results are not what it is trained to write
        written = "".join(piece for piece, by_tool in tool_pieces(inputs.split("\n", 1)[1]) if not by_tool)
        assert targets == written[:len(targets) - len("<|endoftext|>")] + "<|endoftext|>"  # x lacks the last token


def test_the_trainer_reads_a_row_with_calls_as_the_sampler_did_where_the_policy_chose():
    """lp_diff with tools on: the trainer's log-probs of the sampled rows equal the sampler's at every position the
    policy chose (mask 1), ~1e-6 as without tools; at the environment's tokens they differ, and the mask hides them."""
    model, G, N = tiny(3), 4, 30
    u = torch.rand(G, N, generator=torch.Generator().manual_seed(2))
    s = sample(model, [encode("What is 12*34?\n")], G, N, eos_id=EOS_ID, uniforms=u, pad_id=PAD_ID,
               force=[typist("<<12*34="), tools.calculator])
    width = s.tokens.shape[1]
    with torch.no_grad():
        logprobs, _ = train.policy_logprobs(model, s, torch.arange(G), width, 1.0)  # (G, width - 1), as grpo_update
    gap, chosen = (logprobs - s.logprobs[:, 1:width]).abs(), s.mask[:, 1:width].bool()  # (G, width - 1) each
    forced = ~chosen & s.key_mask[:, 1:width].bool() & (torch.arange(1, width) >= s.prompt_len)  # the forced tokens
    assert chosen.sum() > 4 * G and forced.sum() >= 13 * G
    assert gap[chosen].max() < 1e-5, gap[chosen].max()
    assert gap[forced].max() > 0.1  # forced tokens carry log-prob 0 in the sampler: only the mask keeps them out
