"""The tokenizer and the task generator: round trips, determinism, exact answers, split, the teacher's mistakes."""
import random
from fractions import Fraction

import pytest

from data.tokenizer import ENC, encode, decode, SPECIALS, EOS, PAD, EOS_ID, PAD_ID, VOCAB_SIZE
from data.tasks import FAMILIES, generate_problems, demonstration, split_of, response

enc = ENC


def test_tokenizer_round_trip_and_byte_level():
    for text in ["What is 47+85?\n", "x=-7/2", "  tabs\tand\nnewlines ", "ünïcødé ✓", ""]:
        assert decode(encode(text)) == text
    # every digit and operator is its own token
    assert encode("123+-*/=") == [ord(c) for c in "123+-*/="]


def test_special_tokens():
    ids = [enc.encode_single_token(s) for s in SPECIALS]
    assert ids == list(range(256, 262)) and max(ids) < VOCAB_SIZE
    assert (EOS_ID, PAD_ID) == (enc.encode_single_token(EOS), enc.encode_single_token(PAD))
    assert PAD_ID != EOS_ID  # EOS must stay trainable
    text = "<think>1+1=2</think><answer>2</answer><|endoftext|>"
    ids = encode(text)
    assert ids[0] == 258 and ids[-1] == 256 and len(ids) == 1 + 5 + 1 + 1 + 1 + 1 + 1
    assert decode(ids) == text
    # ids beyond the tokenizer (the padded vocabulary) decode to a replacement character, never raise
    assert decode([52, 262, 263]) == "4\ufffd\ufffd"


def test_problems_deterministic_per_seed():
    a = generate_problems(50, seed=3)
    assert a == generate_problems(50, seed=3)
    assert a != generate_problems(50, seed=4)
    assert {p.family for p in generate_problems(200, seed=0)} == set(FAMILIES)


def independent_answer(p):
    """Re-derive the answer from the prompt text with Fraction, independently of data/tasks.py's solvers."""
    q = p.prompt.rstrip("?.\n").split(" ")[-1]
    if p.family == "lin":  # "Solve 3x+5=12."
        lhs, c = q.split("=")
        a, b = lhs.split("x")
        return Fraction(int(c) - int(b), int(a))
    a, op, b = next((q.partition(o) for o in "+*" if o in q), None) or q.rpartition("-")
    a, b = int(a), int(b)
    return {"+": a + b, "-": a - b, "*": a * b}[op]


@pytest.mark.parametrize("digits", [1, 2, 3, 4])
def test_answers_are_exact_and_reduced(digits):
    for p in generate_problems(300, seed=digits, digits=digits):
        truth = independent_answer(p)
        assert Fraction(p.answer) == truth, p
        expected = str(truth.numerator) if truth.denominator == 1 else f"{truth.numerator}/{truth.denominator}"
        assert p.answer == expected  # reduced, sign on the numerator
    assert any("/" in p.answer for p in generate_problems(300, seed=0, families=("lin",)))
    assert any(p.answer.startswith("-") for p in generate_problems(300, seed=0, families=("sub",)))


def test_worked_solutions_conclude_the_answer():
    for p in generate_problems(400, seed=7, digits={"add": 3, "sub": 3, "mul": 3, "lin": 2}):
        last = p.solution.splitlines()[-1]
        assert Fraction(last.rsplit("=", 1)[1]) == Fraction(p.answer), (p.prompt, p.solution)


def test_train_and_test_are_disjoint():
    train = {p.prompt for p in generate_problems(3000, seed=0, digits=2)}
    test = {p.prompt for p in generate_problems(300, seed=0, split="test", digits=2)}
    assert train and test and not train & test
    assert all(split_of(p) == "test" for p in generate_problems(50, seed=1, split="test"))


def test_teacher_mistakes_are_wrong_and_the_rest_right():
    rng = random.Random(0)
    problems = generate_problems(1000, seed=11, digits=3)
    n_wrong = n_think = 0
    for p in problems:
        text, right, thinks = demonstration(p, rng, think_prob=0.5, error_prob=0.3)
        answer = text.split("<answer>")[1].split("</answer>")[0]
        assert (Fraction(answer) == Fraction(p.answer)) == right, (p, text)
        think = text.split("<think>")[1].split("</think>")[0]
        assert bool(think) == thinks
        if thinks:  # the think block concludes the answer it gives, right or wrong
            assert Fraction(think.splitlines()[-1].rsplit("=", 1)[1]) == Fraction(answer), text
        if right:
            assert text == response(p.solution if thinks else "", p.answer)
        n_wrong += not right
        n_think += thinks
    assert 0.25 < n_wrong / len(problems) < 0.35 and 0.45 < n_think / len(problems) < 0.55


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="family"):
        generate_problems(1, seed=0, families=("div",))
    with pytest.raises(ValueError, match="split"):
        generate_problems(1, seed=0, split="val")


def test_a_distinct_split_has_no_repeats_and_an_unfillable_one_stops():
    problems = generate_problems(200, seed=1338, split="test", families=("add", "sub"), digits=2, distinct=True)
    assert len({p.prompt for p in problems}) == 200
    assert len({p.prompt for p in generate_problems(200, seed=1338, split="test", families=("add", "sub"))}) < 200
    with pytest.raises(ValueError, match="only 21 distinct test problems"):  # 1-digit add/sub has 200 in all
        generate_problems(200, seed=1, split="test", families=("add", "sub"), digits=1, distinct=True)
    with pytest.raises(ValueError, match="digits must be >= 1"):
        generate_problems(5, seed=1, digits=0)
