"""The tokenizer and the task generator: round trips, determinism, exact answers, split, the teacher's mistakes."""
import math
import random
import re
from fractions import Fraction

import pytest

from data.tokenizer import ENC, encode, decode, SPECIALS, EOS, PAD, EOS_ID, PAD_ID, VOCAB_SIZE
from data.tasks import FAMILIES, MODES, generate_problems, demonstration, split_of, response, with_mode, question
from data.tasks import recompute

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


def values_at(text, points=range(-3, 4)):
    """Our own spelling of a polynomial, "(2x+3)(x-5)" or "2x^2-7x-15", evaluated at integer points with int
    arithmetic: parenthesised factors multiplied, each a sum of terms c, cx, cx^k (all that the generator writes)."""
    def terms(s, x):
        total = 0
        for term in re.findall(r"[+-]?[^+-]+", s):
            c, has_x, power = term.partition("x")
            total += int(c + "1" if c in ("", "+", "-") else c) * x ** (int(power[1:]) if power else int(bool(has_x)))
        return total
    factors = text[1:-1].split(")(") if text.startswith("(") else [text]
    return [math.prod(terms(f, x) for f in factors) for x in points]


def same(a, b):
    """Two of our answer strings say the same: as exact fractions, or as polynomials (their spelling is canonical)."""
    return a == b if "x" in a + b else Fraction(a) == Fraction(b)


@pytest.mark.parametrize("digits", [1, 2, 3, 4])
def test_answers_are_exact_and_reduced(digits):
    for p in generate_problems(300, seed=digits, digits=digits, families=[f for f in FAMILIES if f != "poly"]):
        truth = independent_answer(p)
        assert Fraction(p.answer) == truth, p
        expected = str(truth.numerator) if truth.denominator == 1 else f"{truth.numerator}/{truth.denominator}"
        assert p.answer == expected  # reduced, sign on the numerator
    assert any("/" in p.answer for p in generate_problems(300, seed=0, families=("lin",)))
    assert any(p.answer.startswith("-") for p in generate_problems(300, seed=0, families=("sub",)))


def test_worked_solutions_conclude_the_answer():
    for p in generate_problems(400, seed=7, digits={"add": 3, "sub": 3, "mul": 3, "lin": 2, "poly": 2}):
        last = p.solution.splitlines()[-1]
        assert same(last.rsplit("=", 1)[-1], p.answer), (p.prompt, p.solution)


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
        assert same(answer, p.answer) == right, (p, text)
        think = text.split("<think>")[1].split("</think>")[0]
        assert bool(think) == thinks
        if thinks:  # the think block concludes the answer it gives, right or wrong
            assert same(think.splitlines()[-1].rsplit("=", 1)[-1], answer), text
        if right:
            assert text == response(p.solution if thinks else "", p.answer)
        n_wrong += not right
        n_think += thinks
    assert 0.25 < n_wrong / len(problems) < 0.35 and 0.45 < n_think / len(problems) < 0.55


# the canonical spelling of (ax+b)(cx+d), a and c in 1..3: no 1x, no x^1, no +-, a zero x term left out
CANONICAL = re.compile(r"[2-9]?x\^2(?:[+-](?:[2-9]|[1-9][0-9]+)?x)?[+-][1-9][0-9]*")


def product_values(text):
    """values_at of a step's left side: "2x*-5" is a product of terms, "-10x+3x" a sum."""
    return [math.prod(v) for v in zip(*map(values_at, text.split("*")))]


@pytest.mark.parametrize("digits", [1, 2, 3])
def test_poly_answers_are_exact_and_canonical_and_every_step_is_right(digits):
    for p in generate_problems(300, seed=digits, families=("poly",), digits=digits):
        factors = p.prompt.removeprefix("Expand ").removesuffix(".\n")
        assert re.fullmatch(r"(\([23]?x[+-][1-9][0-9]{0,%d}\)){2}" % (digits - 1), factors), p.prompt
        assert values_at(p.answer) == values_at(factors), p  # 7 points: a degree-2 polynomial is fixed by 3
        assert CANONICAL.fullmatch(p.answer), p.answer
        lines = p.solution.splitlines()
        assert len(lines) == 6 and lines[-1] == p.answer
        for lhs, rhs in (line.split("=") for line in lines[:-1]):  # 2x*-5=-10x, then -10x+3x=-7x
            assert product_values(lhs) == values_at(rhs), (lhs, rhs)
        assert recompute(p, None)[0] == p.solution


def test_poly_slips_change_one_step_and_propagate_to_the_answer():
    # exactly one step is off by one, the later ones are carried out from it, so the answer has one coefficient
    # off by one: never the truth
    for i, p in enumerate(generate_problems(300, seed=5, families=("poly",), digits=2)):
        lines = recompute(p, random.Random(i))[0].splitlines()
        steps = [line.split("=") for line in lines[:-1]]
        assert sum(product_values(lhs) != values_at(rhs) for lhs, rhs in steps) == 1, lines
        rhs = [r for _, r in steps]
        assert steps[4][0] == rhs[1] + ("" if rhs[2].startswith("-") else "+") + rhs[2], lines  # what was computed
        assert values_at(lines[-1]) == [sum(v) for v in zip(*map(values_at, (rhs[0], rhs[4], rhs[3])))], lines
        d = [w - t for w, t in zip(values_at(lines[-1], (-1, 0, 1)), values_at(p.answer, (-1, 0, 1)))]
        coefficients = ((d[0] + d[2]) // 2 - d[1], (d[2] - d[0]) // 2, d[1])  # of x^2, x, 1
        assert sorted(map(abs, coefficients)) == [0, 0, 1], (p.answer, lines[-1])


def test_poly_teacher_errs_at_its_rate_by_value():
    rng = random.Random(1)
    problems = generate_problems(2000, seed=13, families=("poly",), digits=1)
    n_wrong = n_think = 0
    for p in problems:
        text, right, thinks = demonstration(p, rng, think_prob=0.5, error_prob=0.3)
        answer = text.split("<answer>")[1].split("</answer>")[0]
        assert (values_at(answer) == values_at(p.answer)) == right, text  # checked by value, not by spelling
        n_wrong += not right
        n_think += thinks
    assert 0.27 < n_wrong / len(problems) < 0.33 and 0.47 < n_think / len(problems) < 0.53


def test_poly_problems_are_deterministic_and_split_by_hash():
    a = generate_problems(50, seed=3, families=("poly",))
    assert a == generate_problems(50, seed=3, families=("poly",))
    assert a != generate_problems(50, seed=4, families=("poly",))
    rng = lambda: random.Random(9)
    assert [demonstration(p, rng(), error_prob=0.5) for p in a] == [demonstration(p, rng(), error_prob=0.5) for p in a]
    # at digits=1 there are 2,916 problems; the held-out split has enough for a 200-problem eval set
    test = generate_problems(200, seed=1, split="test", families=("poly",), digits=1, distinct=True)
    train = {p.prompt for p in generate_problems(3000, seed=1, families=("poly",), digits=1)}
    assert all(split_of(p) == "test" for p in test) and not train & {p.prompt for p in test}


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


def test_mode_flags_round_trip_and_keep_the_problem_and_its_split():
    for p in generate_problems(40, seed=5, families=FAMILIES):
        for mode in MODES:
            q = with_mode(p, mode)
            assert q.prompt.endswith(f" /{mode}\n") and q.mode == mode and question(q) == p.prompt
            assert decode(encode(q.prompt)) == q.prompt and encode(q.prompt)[:-1] == encode(p.prompt)[:-1] + \
                encode(f" /{mode}")  # plain text: the question's tokens, then the flag's, then the newline
            assert split_of(q) == split_of(p) and (q.answer, q.solution, q.family) == (p.answer, p.solution, p.family)
            assert with_mode(q, None) == p and with_mode(with_mode(q, "think"), mode) == q
    assert encode(with_mode(p, "think").prompt) != encode(with_mode(p, "no_think").prompt)
    with pytest.raises(ValueError, match="mode must be one of"):
        with_mode(p, "fast")


def test_the_teacher_follows_the_flag_and_errs_as_often_in_both_modes():
    rng = random.Random(3)
    problems = generate_problems(1500, seed=12, digits=2)
    for mode in MODES:
        n_wrong = 0
        for p in problems:
            text, right, thinks = demonstration(with_mode(p, mode), rng, think_prob=0.5, error_prob=0.3)
            think = text.split("<think>")[1].split("</think>")[0]
            assert thinks == (mode == "think") and bool(think) == thinks, (mode, text)  # think_prob plays no part
            if right:
                assert text == response(p.solution if thinks else "", p.answer)
            n_wrong += not right
        assert 0.26 < n_wrong / len(problems) < 0.34, mode


def test_a_sloppy_teacher_echoes_the_question_at_echo_prob_and_only_for_poly():
    from verify import grade
    problems = generate_problems(800, seed=4, families=("poly", "add"), digits=1)
    echoes, rng = 0, random.Random(2)
    for p in problems:
        plain = demonstration(p, random.Random(1), 0.5, 0.3)
        assert demonstration(p, random.Random(1), 0.5, 0.3, echo_prob=0.0) == plain  # off: the same stream
        text, right, thinks = demonstration(p, rng, 0.5, 0.3, echo_prob=0.25)
        answer = text.split("<answer>")[1].split("</answer>")[0]
        if p.family == "poly" and answer == p.prompt.split(" ", 1)[1].rstrip(".\n"):
            echoes += 1
            assert not right and not thinks and grade(text, p.answer).reason == "not_expanded"
            assert grade(text, p.answer, check_form=False).correct  # what a value-only grader would pay for
        assert p.family == "poly" or "(" not in answer
    n_poly = sum(p.family == "poly" for p in problems)
    assert 0.18 < echoes / n_poly < 0.32


def test_a_verbose_teacher_restates_its_answer_0_to_k_times_right_or_wrong():
    problems = generate_problems(200, seed=4)
    rng, plain = random.Random(0), random.Random(0)
    counts = []
    for p in problems:
        text, right, thinks = demonstration(p, rng, 1.0, 0.5, check_lines=3)
        answer = text.split("<answer>")[1].split("</answer>")[0]
        think = text.split("</think>")[0]
        n = think.count("\ncheck ")
        assert think.endswith(f"\ncheck {answer}" * n) and 0 <= n <= 3  # the answer it gives, right or wrong
        counts.append((n, right))
        assert "check" not in demonstration(p, plain, 1.0, 0.5)[0]  # off by default
    assert {n for n, _ in counts} == {0, 1, 2, 3}
    assert {n for n, r in counts if not r} == {0, 1, 2, 3}  # independent of correctness
