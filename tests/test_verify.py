"""The verifier is a security boundary: every case says what it must return, none may raise, all are fast, and
nothing the model writes is ever executed. Run: python -m pytest tests/test_verify.py -q  (about 3 seconds)."""
import ast
import random
import re
import time
from fractions import Fraction
from pathlib import Path

import pytest
import sympy

import verify
from verify import FORMATTED, Grade, grade


def A(answer, think="ok"):
    """A well-formed response around `answer`."""
    return f"<think>{think}</think><answer>{answer}</answer>"


T = "x^2+x-6"  # the truth of "Expand (x+3)(x-2)."


# (response, truth, expected reason). correct iff reason == "ok"; formatted iff reason in FORMATTED.
CASES = [
    # --- equivalent forms of the right value
    (A("132"), "132", "ok"),
    (A("0132"), "132", "ok"),
    (A("+132"), "132", "ok"),
    (A("132.0"), "132", "ok"),
    (A("132."), "132", "ok"),
    (A("132.000"), "132", "ok"),
    (A(" 132 "), "132", "ok"),
    (A("\n132\n"), "132", "ok"),
    (A("-38"), "-38", "ok"),
    (A("-038"), "-38", "ok"),
    (A("-38.0"), "-38", "ok"),
    (A("7/2"), "7/2", "ok"),
    (A("14/4"), "7/2", "ok"),
    (A("7 / 2"), "7/2", "ok"),
    (A("007/002"), "7/2", "ok"),
    (A("3.5"), "7/2", "ok"),
    (A("3.50"), "7/2", "ok"),
    (A("\\frac{7}{2}"), "7/2", "ok"),
    (A("\\dfrac{7}{2}"), "7/2", "ok"),
    (A("\\frac{ 14 }{ 4 }"), "7/2", "ok"),
    (A("-3/4"), "-3/4", "ok"),
    (A("-6/8"), "-3/4", "ok"),
    (A("-0.75"), "-3/4", "ok"),
    (A("-.75"), "-3/4", "ok"),
    (A("-\\frac{3}{4}"), "-3/4", "ok"),
    (A("\\frac{-3}{4}"), "-3/4", "ok"),
    (A(".5"), "1/2", "ok"),
    (A("0"), "0", "ok"),
    (A("-0"), "0", "ok"),
    (A("+0.000"), "0", "ok"),
    (A("0/5"), "0", "ok"),
    (A("\\boxed{132}"), "132", "ok"),
    (A("$132$"), "132", "ok"),
    (A("x = 132"), "132", "ok"),
    (A("x=132"), "132", "ok"),
    (A("$\\boxed{x = -3/4}$"), "-3/4", "ok"),
    (A("x = \\boxed{7/2}"), "7/2", "ok"),
    (A("\\boxed{\\frac{7}{2}}"), "7/2", "ok"),
    (A("$x = \\boxed{\\frac{-6}{8}}$"), "-3/4", "ok"),
    ("  <think>ok</think>\n\n<answer>132</answer>\n", "132", "ok"),
    ("<think></think><answer>132</answer>", "132", "ok"),
    (A("132", think="7+5+0=12 r=2\n4+8+1=13 r=32\nr=132"), "132", "ok"),
    (A("132", think="unicode is fine in here: \u0661\u0663\u0662 \uff11 \u2212 \u00e9"), "132", "ok"),
    (A("132", think="the answer is 999, or maybe 132 or 131"), "132", "ok"),
    # --- wrong values: formatted, no reward beyond the format bonus
    (A("131"), "132", "wrong_value"),
    (A("133"), "132", "wrong_value"),
    (A("-132"), "132", "wrong_value"),
    (A("1320"), "132", "wrong_value"),
    (A("13.2"), "132", "wrong_value"),
    (A("38"), "-38", "wrong_value"),
    (A("7/3"), "7/2", "wrong_value"),
    (A("2/7"), "7/2", "wrong_value"),
    (A("3.4999999"), "7/2", "wrong_value"),
    (A("0.333"), "1/3", "wrong_value"),
    (A("\\frac{3}{4}"), "-3/4", "wrong_value"),
    (A("1"), "0", "wrong_value"),
    # --- format failures: right number, no reward
    ("132", "132", "no_tags"),
    ("The answer is 132.", "132", "no_tags"),
    ("<answer>132</answer>", "132", "no_tags"),
    ("<think>ok</think>132", "132", "no_tags"),
    ("<think>ok</think><answer>132", "132", "no_tags"),  # truncated
    ("<think>7+5+0=12 r=2", "132", "no_tags"),  # truncated mid-thought
    ("<THINK>ok</THINK><ANSWER>132</ANSWER>", "132", "no_tags"),
    ("<think >ok</think><answer>132</answer>", "132", "no_tags"),
    ("\uff1cthink\uff1eok</think><answer>132</answer>", "132", "no_tags"),
    (A("132") + "<answer>133</answer>", "132", "repeated_tags"),
    ("<think>a</think><think>b</think><answer>132</answer>", "132", "repeated_tags"),
    ("<think><think>a</think></think><answer>132</answer>", "132", "repeated_tags"),
    ("<think>a</think><answer>132</think></answer>", "132", "repeated_tags"),
    ("<think>a<answer>132</answer></think>", "132", "bad_order"),
    ("<answer>132</answer><think>a</think>", "132", "bad_order"),
    ("</think>a<think><answer>132</answer>", "132", "bad_order"),
    ("<think>a</think></answer>132<answer>", "132", "bad_order"),
    (A("132") + " because 12*11=132", "132", "text_outside"),
    ("The answer is " + A("132"), "132", "text_outside"),
    ("<think>a</think> so <answer>132</answer>", "132", "text_outside"),
    ("<think>a</think>132<answer>132</answer>", "132", "text_outside"),
    (A("132") + "<|endoftext|>", "132", "text_outside"),
    (A("132", think="a<|endoftext|>b"), "132", "text_outside"),
    (A("132") + "\u00a0", "132", "text_outside"),  # a non-ASCII space is not whitespace here
    ("", "132", "empty"),
    (" \n\t ", "132", "empty"),
    (A(""), "132", "empty"),
    (A("  \n "), "132", "empty"),
    ("<think>132</think><answer></answer>", "132", "empty"),  # the answer inside the reasoning
    # --- hedges
    (A("5 or 6"), "5", "multiple_values"),
    (A("5, 6"), "5", "multiple_values"),
    (A("5,6"), "5", "multiple_values"),
    (A("5; 6"), "5", "multiple_values"),
    (A("5 and 6"), "5", "multiple_values"),
    (A("5 | 6"), "5", "multiple_values"),
    (A("5 \\pm 1"), "5", "multiple_values"),
    (A("x = 6 = 5"), "5", "multiple_values"),
    (A("x = 5 = 5"), "5", "multiple_values"),
    (A("1/2 or 2/4"), "1/2", "multiple_values"),
    (A("1,000"), "1000", "multiple_values"),
    (A("\\boxed{5} \\boxed{6}"), "5", "unparseable"),
    (A("5 6"), "5", "unparseable"),
    (A("5\n6"), "5", "unparseable"),
    # --- expressions, words and odd notations: rejected, not evaluated
    (A("37*41"), "1517", "unparseable"),
    (A("2+3"), "5", "unparseable"),
    (A("10-5"), "5", "unparseable"),
    (A("(5)"), "5", "unparseable"),
    (A("5%"), "5", "unparseable"),
    (A("5 apples"), "5", "unparseable"),
    (A("five"), "5", "unparseable"),
    (A("nan"), "5", "unparseable"),
    (A("inf"), "5", "unparseable"),
    (A("-oo"), "5", "unparseable"),
    (A("zoo"), "5", "unparseable"),
    (A("I"), "5", "unparseable"),
    (A("1e2"), "100", "unparseable"),
    (A("1E2"), "100", "unparseable"),
    (A("10^2"), "100", "unparseable"),
    (A("10**2"), "100", "unparseable"),
    (A("1_000"), "1000", "unparseable"),
    (A("0x64"), "100", "unparseable"),
    (A("5/0"), "5", "unparseable"),
    (A("0/0"), "0", "unparseable"),
    (A("\\frac{5}{0}"), "5", "unparseable"),
    (A("--5"), "5", "unparseable"),
    (A("+-5"), "-5", "unparseable"),
    (A("- 5"), "-5", "unparseable"),
    (A("7/-2"), "-7/2", "unparseable"),
    (A("-\\frac{-3}{4}"), "3/4", "unparseable"),
    (A("1.5/3"), "1/2", "unparseable"),
    (A("\\frac{1.5}{3}"), "1/2", "unparseable"),
    (A("5.0.0"), "5", "unparseable"),
    (A("."), "0", "unparseable"),
    (A("+"), "0", "unparseable"),
    (A("x = "), "0", "unparseable"),
    (A("y = 5"), "5", "unparseable"),
    (A("\\boxed{5"), "5", "unparseable"),
    (A("\\boxed{\\boxed{5}}"), "5", "unparseable"),
    (A("$$5$$"), "5", "unparseable"),
    (A("x = x = 5"), "5", "unparseable"),  # one number: not a hedge, just not a literal
    # --- hostile payloads
    (A("__import__('os').system('echo pwned')"), "5", "unparseable"),
    (A("exec('import os')"), "5", "unparseable"),
    (A("lambda: 5"), "5", "unparseable"),
    (A("5 if True else 6"), "5", "unparseable"),
    (A("int('5')"), "5", "unparseable"),
    (A("'5'"), "5", "unparseable"),
    (A("[5][0]"), "5", "unparseable"),
    (A("<script>alert(5)</script>"), "5", "unparseable"),
    (A("9**9**9**9"), "5", "unparseable"),
    (A("2**2**2**2**2**2"), "5", "unparseable"),
    (A("10^10^10^10"), "5", "unparseable"),
    (A("9" * 41), "5", "too_long"),  # digit cap, per number
    (A("1." + "0" * 41), "1", "too_long"),
    (A("1/" + "1" * 41), "0", "too_long"),  # one long number among short ones
    (A("\\frac{" + "1" * 30 + "}{" + "1" * 30 + "}"), "1", "ok"),  # 60 digits, but two numbers of 30
    (A("1" + "0" * 29 + "/" + "2" + "0" * 29), "1/2", "ok"),
    (A("1" + "0" * 29 + "/" + "3" + "0" * 29), "1/2", "wrong_value"),
    (A("1." + "0" * 40), "1", "ok"),
    (A("9" * 40), "9" * 40, "ok"),  # exactly at the digit cap
    (A("1" * 200), "5", "too_long"),  # answer cap
    (A("9" * 10_000), "5", "too_long"),  # response cap
    (A("(" * 40 + "5" + ")" * 40), "5", "unparseable"),
    (A("(" * 1000 + "5" + ")" * 1000), "5", "too_long"),
    (A("\\boxed{" * 10 + "5" + "}" * 10), "5", "unparseable"),
    (A("[" * 45 + "]" * 45), "5", "unparseable"),
    (A("\u0665"), "5", "bad_chars"),  # Arabic-Indic five
    (A("\u06f5"), "5", "bad_chars"),  # Extended Arabic-Indic five
    (A("\uff15"), "5", "bad_chars"),  # fullwidth five
    (A("\U0001d7d3"), "5", "bad_chars"),  # mathematical bold five
    (A("\u0967\u0968"), "12", "bad_chars"),  # Devanagari
    (A("\u22125"), "-5", "bad_chars"),  # unicode minus
    (A("5\u200b"), "5", "bad_chars"),  # zero-width space
    (A("\u00bd"), "1/2", "bad_chars"),  # vulgar fraction
    (A("5\x00"), "5", "bad_chars"),
    (A("5", think="\x00"), "5", "bad_chars"),
    (A("5\x1b[2J"), "5", "bad_chars"),
    (A("5\x0b"), "5", "bad_chars"),
    ("\x00" * 100, "5", "bad_chars"),
    ("x" * 1_000_000, "5", "too_long"),
    (A("5") + " " * 1_000_000, "5", "too_long"),
    (A("5", think="a" * 1_000_000), "5", "too_long"),
    ("<think>" * 150_000, "5", "too_long"),
    ("<think>" * 500, "5", "no_tags"),
    ("<think>" * 500 + "</think>" + "<answer>5</answer>", "5", "repeated_tags"),
    ("</answer>" * 400 + A("5"), "5", "repeated_tags"),
    (A("5", think="x" * (verify.MAX_RESPONSE_CHARS - len(A("5", think="")))), "5", "ok"),  # exactly at the cap
    (A("5", think="x" * (verify.MAX_RESPONSE_CHARS - len(A("5", think="")) + 1)), "5", "too_long"),
    (A("x^2+x-6"), "5", "unparseable"),  # a number truth keeps the number grammar: no expressions
    (A("5x^0"), "5", "unparseable"),
    # --- polynomials: any expanded spelling of the truth's value is right
    (A("x^2+x-6"), T, "ok"),
    (A("x**2+x-6"), T, "ok"),
    (A(" x^2 + x - 6 "), T, "ok"),
    (A("x ^ 2 + x\n- 6"), T, "ok"),
    (A("-6+x+x^2"), T, "ok"),
    (A("x-6+x^2"), T, "ok"),
    (A("+x^2+x-6"), T, "ok"),
    (A("1x^2+1x-6"), T, "ok"),
    (A("x^2+x^1-6"), T, "ok"),
    (A("1*x^2+1*x^1-6"), T, "ok"),
    (A("x^2+x-6x^0"), T, "ok"),
    (A("x^2+x-006"), T, "ok"),
    (A("0x^3+x^2+x-6"), T, "ok"),  # a zero term is a collected term
    (A("\\boxed{x^2+x-6}"), T, "ok"),
    (A("$x^2+x-6$"), T, "ok"),
    (A("$\\boxed{x^2+x-6}$"), T, "ok"),
    (A("x^2-9"), "x^2-9", "ok"),
    (A("x^2+0x-9"), "x^2-9", "ok"),
    (A("-x+2x^2-15"), "2x^2-x-15", "ok"),
    (A("-x^2+81"), "81-x^2", "ok"),
    (A("x^2+x-6", think="x*x=x^2\nx*-2=-2x\n3*x=3x\n3*-2=-6\n-2x+3x=x\nx^2+x-6"), T, "ok"),
    # --- wrong values, formatted (the value is checked before the form)
    (A("x^2+x-5"), T, "wrong_value"),
    (A("x^2-x-6"), T, "wrong_value"),
    (A("2x^2+x-6"), T, "wrong_value"),
    (A("x^2+x"), T, "wrong_value"),
    (A("x^3+x-6"), T, "wrong_value"),
    (A("-6"), T, "wrong_value"),  # a constant is an expression too
    (A("x^2x-6"), T, "wrong_value"),  # x^3-6
    (A("(x+3)(x+2)"), T, "wrong_value"),
    (A("9^10"), T, "wrong_value"),  # small enough to compute
    (A("(x+1)^10(x+1)^10"), T, "wrong_value"),  # degree 20: at the cap, computed
    (A("(" + "9" * 40 + "x)^3"), T, "wrong_value"),  # 405 bits: under the cap
    (A("(9999999999x+9999999999)^10(9999999999x-9999999999)^3"), T, "wrong_value"),  # 481 bits, degree 13
    (A("(x+1)(x+2)(x+3)(x+4)(x+5)(x+6)(x+7)(x+8)(x+9)(x+10)"), T, "wrong_value"),  # 50 tokens: at the cap
    (A("1" + "+1" * 24), T, "wrong_value"),
    # --- equal, but not in expanded form: formatted, not correct
    (A("(x+3)(x-2)"), T, "not_expanded"),  # the question echoed back
    (A("(x-2)(x+3)"), T, "not_expanded"),
    (A("(x+3)*(x-2)"), T, "not_expanded"),
    (A("x(x+1)-6"), T, "not_expanded"),
    (A("x^2+3x-2x-6"), T, "not_expanded"),  # like terms not collected
    (A("x^2+x-4-2"), T, "not_expanded"),
    (A("x*x+x-6"), T, "not_expanded"),
    (A("x^2+x-2*3"), T, "not_expanded"),
    (A("x^2+x*1-6"), T, "not_expanded"),  # the coefficient comes first
    (A("(x^2+x-6)"), T, "not_expanded"),
    (A("x^2+x+(0-6)"), T, "not_expanded"),
    (A("(" * 8 + "x^2+x-6" + ")" * 8), T, "not_expanded"),  # at the depth cap
    # --- not expressions of the grammar
    (A("x^2+x+-6"), T, "unparseable"),  # one sign per term
    (A("x^2--x-6"), T, "unparseable"),
    (A("x^2+x*-6"), T, "unparseable"),
    (A("x^2+x-6-"), T, "unparseable"),
    (A("x^2+x-6)"), T, "unparseable"),
    (A("(x^2+x-6"), T, "unparseable"),
    (A("x^2+x-6()"), T, "unparseable"),
    (A("2 3x"), T, "unparseable"),
    (A("(x+3)2"), T, "unparseable"),
    (A("2x^2/2+x-6"), T, "unparseable"),  # no division
    (A("x/2"), T, "unparseable"),
    (A("x^2+x-6.0"), T, "unparseable"),  # integers only
    (A("x^0.5"), T, "unparseable"),
    (A("x^-1"), T, "unparseable"),
    (A("x^(2)+x-6"), T, "unparseable"),  # the exponent is a literal
    (A("x^x"), T, "unparseable"),
    (A("x^{2}+x-6"), T, "unparseable"),
    (A("+-*^"), T, "unparseable"),
    (A("()"), T, "unparseable"),
    (A("x!"), T, "unparseable"),
    (A("[x]"), T, "unparseable"),
    (A("x^9^9^9"), T, "unparseable"),  # a tower: no exponent but a literal
    (A("9**9**9"), T, "unparseable"),
    (A("9**9**9**9"), T, "unparseable"),
    (A("(x+1)^10^10"), T, "unparseable"),
    (A("x2+x-6"), T, "unknown_symbol"),  # one name, read whole
    (A("xx"), T, "unknown_symbol"),
    (A("y^2+y-6"), T, "unknown_symbol"),
    (A("X^2+X-6"), T, "unknown_symbol"),
    (A("exp(x)"), T, "unknown_symbol"),
    (A("sqrt(x)^4"), T, "unknown_symbol"),
    (A("1e5"), T, "unknown_symbol"),
    (A("oo"), T, "unknown_symbol"),
    (A("pi"), T, "unknown_symbol"),
    (A("I"), T, "unknown_symbol"),
    (A("Symbol('x')"), T, "unknown_symbol"),
    (A("__import__('os').system('ls')"), T, "unknown_symbol"),
    (A("lambda: x"), T, "unknown_symbol"),
    (A("x = x^2+x-6"), T, "multiple_values"),
    (A("x^2+x-6 or x^2-x-6"), T, "multiple_values"),
    (A("x^2+x-6, x^2"), T, "multiple_values"),
    (A("x^2+x-6 \\pm 1"), T, "multiple_values"),
    (A(""), T, "empty"),
    (A(" \n "), T, "empty"),
    (A("x\u00b2+x-6"), T, "bad_chars"),  # superscript two
    (A("\u0445^2+\u0445-6"), T, "bad_chars"),  # Cyrillic x
    (A("x^2+x\u22126"), T, "bad_chars"),  # unicode minus
    (A("x^\uff12+x-6"), T, "bad_chars"),  # fullwidth two
    (A("x^2+x-6\u200b"), T, "bad_chars"),
    (A("x^2+x-6\x00"), T, "bad_chars"),
    # --- caps: refused before anything big is computed
    (A("x^11"), T, "too_complex"),  # exponent
    (A("x^99999999999"), T, "too_complex"),
    (A("(x^10)^10"), T, "too_complex"),  # degree
    (A("(x+1)^10(x+1)^10(x+1)"), T, "too_complex"),
    (A("(x+1)^10" * 5), T, "too_complex"),
    (A("x" + "*x" * 20), T, "too_complex"),
    (A("((9^10)^10)^10"), T, "too_complex"),  # degree 0, but 4000 bits
    (A("(" + "9" * 40 + "x)^4"), T, "too_complex"),  # 540 bits
    (A("(" * 9 + "x" + ")" * 9), T, "too_complex"),  # depth
    (A("x^" + "9" * 41), T, "too_long"),  # digits
    (A("9" * 41 + "x"), T, "too_long"),
    (A("x+" * 25 + "x"), T, "too_long"),  # 51 tokens
    (A("(x+1)" * 20), T, "too_long"),  # 100 tokens, 100 characters
    (A("(" * 1000 + "x" + ")" * 1000), T, "too_long"),  # answer characters
    (A("x" * 1_000_000), T, "too_long"),  # response characters
]
IDS = [f"{i}-{reason}" for i, (_, _, reason) in enumerate(CASES)]


def documented_reasons():
    """(formatted, not formatted) reason codes, read from the `reason` entry of verify's docstring."""
    entry = re.search(r"^  reason +(.*?\(not formatted\))", verify.__doc__, re.M | re.S).group(1)
    good, bad = entry.split(";")
    codes = lambda part: set(re.findall(r"[a-z_]+", part.split("(")[0]))
    return codes(good), codes(bad)


def test_every_documented_reason_is_returned():
    # what verify returns, not what the table says: a reason it never produces, or an undocumented one, fails here
    good, bad = documented_reasons()
    assert good == set(FORMATTED) and not good & bad
    seen = set()
    for response, truth, _ in CASES:
        g = grade(response, truth)
        assert g.formatted == (g.reason in FORMATTED) and g.correct == (g.reason == "ok"), (response[:80], g)
        seen.add(g.reason)
    assert seen == good | bad


@pytest.mark.parametrize("response, truth, reason", CASES, ids=IDS)
def test_case(response, truth, reason):
    g = grade(response, truth)
    assert isinstance(g, Grade)
    assert (g.reason, g.correct, g.formatted) == (reason, reason == "ok", reason in FORMATTED), repr(response[:80])
    assert g.reward() == float(g.correct)


def test_every_case_is_fast():
    # the minimum of 3 runs filters scheduler noise; a real blow-up (backtracking, huge ints) is slow every time
    times = []
    for response, truth, _ in CASES:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            grade(response, truth)
            best = min(best, time.perf_counter() - t0)
        times.append(best)
    slowest = max(times)
    print(f"slowest of {len(CASES)} cases: {slowest * 1e6:.1f} us")
    assert slowest < 0.010


def test_the_answer_is_the_text_between_the_answer_tags():
    assert grade(A(" 7/2 "), "7/2").answer == " 7/2 "
    assert grade("7/2", "7/2").answer is None


def test_reward_and_format_bonus():
    assert grade(A("132"), "132").reward() == 1.0
    assert grade(A("132"), "132").reward(0.1) == pytest.approx(1.1)
    assert grade(A("131"), "132").reward(0.1) == pytest.approx(0.1)  # formatted but wrong
    assert grade(A("131"), "132").reward() == 0.0
    assert grade("132", "132").reward(0.1) == 0.0  # right number, no tags
    assert grade(A("lol"), "132").reward(0.1) == 0.0  # tags around junk earn nothing
    assert grade(A("131 or 132"), "132").reward(0.1) == 0.0


@pytest.mark.parametrize("truth, right, wrong", [
    ("0.5", "1/2", "0.6"), ("5.0", "5", "5.1"), ("+5", "5", "-5"), ("-0.75", "-3/4", "0.75"),
    ("\\frac{7}{2}", "3.5", "7/3"), ("005", "5", "50"), ("7/2", "\\frac{14}{4}", "2/7"),
    ("-\\frac{3}{4}", "-.75", "3/4"), (".5", "2/4", "5"), (" 132\n", "132", "133"), ("9" * 40, "9" * 40, "9" * 39),
    ("x**2 - 1", "x^2-1", "x^2+1"), ("-1+x^2", "x^2-1", "1-x^2"), ("$x^2+x-6$", "x^2+x-6", "x^2+x+6"),
    ("x", "1x", "-x"), ("2x^2-x-15", "-15-x+2x^2", "2x^2+x-15"),
])
def test_truth_in_any_answer_notation(truth, right, wrong):
    # other data writes truths as answers are written: one grammar reads both
    assert grade(A(right), truth).reason == "ok"
    assert grade(A(truth), truth).reason == "ok"
    assert grade(A(wrong), truth).reason == "wrong_value"


@pytest.mark.parametrize("truth", ["", " ", "abc", "1/0", "0/0", "\\frac{1}{0}", "2+3", "5 or 6", "7/-2", "-7/-2",
                                   "1e5", "--5", ".", "9" * 41, "\u0665", "\uff15", "\u22125", "5\x00", None, 5,
                                   Fraction(1, 2), "(x+3)(x-2)", "x^2+x+x", "y^2", "x-x", "2x^11", "x/2", "x^2 or x",
                                   "x\u00b2"])
def test_bad_truth_raises(truth):
    with pytest.raises(ValueError) as e:
        grade(A("5"), truth)
    assert repr(truth) in str(e.value)  # the message names the bad truth
    with pytest.raises(ValueError):
        grade("9" * 1_000_000, truth)  # the truth is checked whatever the response


def test_digit_cap_is_per_number():
    # the cap bounds each int(), so it counts each run of digits, not the answer's total
    n = verify.MAX_DIGITS
    assert grade(A("7" * n), "7" * n).reason == "ok"
    assert grade(A("7" * (n + 1)), "7").reason == "too_long"
    assert grade(A("\\frac{" + "4" * 30 + "}{" + "8" * 30 + "}"), "1/2").reason == "ok"  # 60 digits in all
    assert grade(A("4" * 30 + "/" + "9" * 30), "1/2").reason == "wrong_value"


def test_response_must_be_text():
    with pytest.raises(TypeError):
        grade([52, 256], "5")  # token ids, not decoded text: a bug in the caller


def test_hostile_payload_does_not_execute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "pwned"
    payloads = [
        "open('pwned','w').write('1')",
        "__import__('os').system('touch pwned')",
        f"__import__('pathlib').Path({str(target)!r}).touch()",
        "exec(\"open('pwned','w')\")",
        "(lambda: open('pwned', 'w'))()",
    ]
    for payload in payloads:
        for response in (A(payload), payload, A(f"\\boxed{{{payload}}}"), A(f"x = {payload}"), A(f"${payload}$")):
            g = grade(response, "5")
            assert not g.correct and g.reason in ("unparseable", "no_tags", "too_long"), (response, g)
            assert grade(response, "5").reward(0.1) == 0.0
        assert grade(A("5", think=payload), "5").correct  # code in the reasoning is just text
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_no_eval_in_verifier():
    """Read verify.py itself: no eval-like call on anything, and only stdlib imports and the project's tokenizer
    (which decodes the samples' ids; no torch, no sympy)."""
    tree = ast.parse(Path(verify.__file__).read_text())
    banned_names = {"eval", "exec", "compile", "__import__", "getattr", "sympify", "parse_expr", "S"}
    banned_attrs = {"sympify", "parse_expr", "literal_eval", "parse_latex", "system", "popen", "S", "lambdify"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            assert not (isinstance(f, ast.Name) and f.id in banned_names), ast.dump(f)
            assert not (isinstance(f, ast.Attribute) and f.attr in banned_attrs), ast.dump(f)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            assert set(modules) <= {"re", "time", "dataclasses", "fractions", "data.tokenizer"}, modules


# --- property tests: a seeded fuzzer, no new dependency

ATOMS = ["<think>", "</think>", "<answer>", "</answer>", "<|endoftext|>", "<", ">", "/", "think", "answer",
         "0", "1", "5", "7", "9", "12", "-", "+", ".", " ", "\n", "\t", "=", "x", "x = ", ",", " or ", "*", "**",
         "(", ")", "{", "}", "$", "\\boxed{", "\\frac{", "\\dfrac{", "}{", "\\pm", "e", "E", "_", "%", "nan",
         "\x00", "\x1b", "\u0665", "\uff15", "\u2212", "\u00a0", "\u200b", "\U0001d7d3", "\ufffd", "é", "'", '"']


def random_text(rng, max_atoms=30, atoms=ATOMS):
    return "".join(rng.choice(atoms) for _ in range(rng.randrange(max_atoms)))


def test_fuzz_random_strings_never_raise():
    rng = random.Random(0)
    seen = set()
    for i in range(4000):
        truth = rng.choice(["0", "5", "-38", "7/2", "-3/4", "132"])
        # a third fully random, a third random answers in correct tags, a third random around real tags
        kind = i % 3
        response = (random_text(rng) if kind == 0 else A(random_text(rng, 12)) if kind == 1 else
                    random_text(rng, 4) + A(random_text(rng, 6), random_text(rng, 6)) + random_text(rng, 4))
        g = grade(response, truth)
        seen.add(g.reason)
        assert g.formatted == (g.reason in FORMATTED) and g.correct == (g.reason == "ok")
        assert grade(response, truth).reward(0.25) in (0.0, 0.25, 1.25)
        if g.answer is not None:  # only text that sits between the one pair of answer tags
            assert response.count("<answer>") == 1 and f"<answer>{g.answer}</answer>" in response
    assert {"wrong_value", "unparseable", "no_tags", "bad_chars"} <= seen  # the fuzzer reaches every stage


def decimal(q):
    """q as a terminating decimal without sign, or None: 7/8 -> '0.875'."""
    for k in range(12):
        if 10 ** k % q.denominator == 0:
            digits = str(abs(q.numerator) * 10 ** k // q.denominator).rjust(k + 1, "0")
            return digits[: len(digits) - k] + ("." + digits[len(digits) - k:] if k else "")
    return None


def notations(q, rng):
    """Every accepted way of writing q, before wrappers, with random leading zeros, signs and scale factors."""
    a, d = abs(q.numerator), q.denominator
    minus = "-" if q < 0 else ""
    sign = minus or rng.choice(["", "+"])
    z = "0" * rng.randrange(3)
    m = rng.randint(2, 9)
    out = [f"{sign}{a}/{d}", f"{sign}{z}{a * m}/{z}{d * m}", f"{sign}{a} / {d}", f"{sign}\\frac{{{a}}}{{{d}}}",
           f"\\frac{{{minus}{a * m}}}{{{d * m}}}", f"{sign}\\dfrac{{ {a} }}{{ {d} }}"]
    if d == 1:
        out += [f"{sign}{a}", f"{sign}{a}."]
    if (dec := decimal(q)) is not None:
        out += [f"{sign}{z}{dec}", f"{sign}{dec}{'' if '.' in dec else '.'}{'0' * rng.randint(1, 3)}"]
        if dec.startswith("0."):
            out.append(f"{sign}{dec[1:]}")
    return out


def wrapped(core, rng):
    """core in a random subset of \\boxed{}, $$ and `x = `, in random order, in tags with random spaces."""
    ws = lambda: rng.choice(["", " ", "\n", " \n\t "])
    for kind in rng.sample(["boxed", "dollar", "x"], rng.randint(0, 3)):
        if kind == "boxed":
            core = f"\\boxed{{{core}}}"
        elif kind == "dollar":
            core = f"${core}$"
        else:
            core = f"x{rng.choice(['', ' '])}={rng.choice(['', ' '])}{core}"
    think = rng.choice(["", "work", "x=1/2 or 3"])
    return f"{ws()}<think>{think}</think>{ws()}<answer>{ws()}{core}{ws()}</answer>{ws()}"


def random_rational(rng):
    den = rng.choice([1, 1, 2, 4, 5, 8, 10, 16, 20, 25, 40, 125, 1000, rng.randint(1, 1000)])
    return Fraction(rng.randint(-10 ** 6, 10 ** 6), den)


def test_fuzz_every_notation_is_correct_and_perturbations_are_not():
    rng = random.Random(1)
    checked = 0
    for _ in range(1500):
        q = random_rational(rng)
        truth = str(q)  # Fraction's str is exactly our reduced form: "7", "-7/2"
        for core in notations(q, rng):
            response = wrapped(core, rng)
            g = grade(response, truth)
            assert g.correct, (response, truth, g)
            checked += 1
        wrong = q + rng.choice([1, -1]) * Fraction(1, rng.choice([1, q.denominator, 2 * q.denominator, 7]))
        for core in notations(wrong, rng):
            response = wrapped(core, rng)
            g = grade(response, truth)
            assert not g.correct and g.reason == "wrong_value", (response, truth, g)
    assert checked > 10_000


def test_task_answers_graded_correct():
    from data.tasks import FAMILIES, fmt, generate_problems, recompute
    problems = []
    for split in ("train", "test"):
        for digits in (1, 2, 3):
            problems += generate_problems(300, seed=digits, split=split, digits=digits)
    assert {p.family for p in problems} == set(FAMILIES)
    for p in problems:
        g = grade(f"<think>{p.solution}</think><answer>{p.answer}</answer>", p.answer)
        assert g.correct, (p, g)
        if p.family == "poly":  # the teacher's slips (one coefficient off by one), and the question echoed back
            for k in range(3):
                wrong = fmt(recompute(p, random.Random(k))[1])
                assert grade(A(wrong), p.answer).reason == "wrong_value", (p, wrong)
            echo = p.prompt.removeprefix("Expand ").removesuffix(".\n")  # "(2x+3)(x-5)"
            assert grade(A(echo), p.answer).reason == "not_expanded", p
            assert grade(A(echo), p.answer, check_form=False).correct, p
            continue
        q = Fraction(p.answer)  # our own string, so Fraction may read it
        num, den = q.numerator, q.denominator
        for wrong in (f"{num + 1}/{den}", f"{num - 1}/{den}", str(q + 1), f"{num}/{den + 1}", f"{-num}/{den}"):
            if Fraction(wrong) == q:  # -0 is 0
                continue
            g = grade(f"<think>{p.solution}</think><answer>{wrong}</answer>", p.answer)
            assert not g.correct and g.reason == "wrong_value", (p, wrong, g)


# --- polynomials: the form rule, the grammar against a plain reference (sympy, on trusted trees), no library

@pytest.mark.parametrize("answer", ["(x+3)(x-2)", "(x-2)(x+3)", "(x+3)*(x-2)", "((x+3)(x-2))", "x(x+1)-6",
                                    "x^2+3x-2x-6", "x*x+x-6", "(x^2+x-6)", "x^2+x-2*3", "-(6-x-x^2)", "x^2+x-2^2-2",
                                    "(x+3)^1(x-2)^1", "x(x+3)-2(x+3)"])
def test_equal_but_unexpanded_is_right_only_for_the_hackable_grader(answer):
    strict, loose = grade(A(answer), T), grade(A(answer), T, check_form=False)
    assert (strict.reason, strict.correct) == ("not_expanded", False)
    assert (loose.reason, loose.correct) == ("not_expanded", True)  # paid, and still named for what it is
    assert grade(A(answer), "x^2+x-7", check_form=False).reason == "wrong_value"  # the value still counts


def test_check_form_changes_nothing_else():
    for response, truth, reason in CASES:
        g = grade(response, truth, check_form=False)
        assert g.reason == reason and g.correct == (reason in ("ok", "not_expanded")), (response[:80], g)
    assert grade(A("37*41"), "1517", check_form=False).reason == "unparseable"  # numbers stay literals


EXPRESSION_ATOMS = ["x", "x", "x", "1", "2", "3", "6", "9", "10", "0", "+", "-", "+", "-", "*", "**", "^", "^", "(",
                    ")", " ", "y", "xx", "/", ".", "=", ",", " or ", "e", "X", "_", "'", "{", "}", "\\boxed{", "$",
                    "\u2212", "\u00b2", "\u0445", "\uff12", "\x00", "99999999999", "^10", "(x+1)^10"]
EXPRESSION_TRUTHS = ["x^2+x-6", "2x^2-x-15", "x", "-x^2+81", "x^3-3x^2+3x-1"]


def mutated(truth, rng):
    """The truth, perhaps wrapped in a form that keeps its value, with up to two random atoms put in."""
    text = rng.choice(["{}", "{}", "({})", "1({})", "({})^1", "{}+0x", "{}+x-x", "-(-{})"]).format(truth)
    for _ in range(rng.randrange(3)):
        i = rng.randrange(len(text) + 1)
        text = text[:i] + rng.choice(EXPRESSION_ATOMS) + text[i:]
    return text


def test_fuzz_expressions_never_raise():
    rng = random.Random(2)
    seen = set()
    for i in range(2500):
        truth = rng.choice(EXPRESSION_TRUTHS)
        response = A(random_text(rng, 16, EXPRESSION_ATOMS) if i % 2 else mutated(truth, rng))
        g, loose = grade(response, truth), grade(response, truth, check_form=False)
        assert g.formatted == (g.reason in FORMATTED) and g.correct == (g.reason == "ok"), (response, g)
        assert loose.reason == g.reason and loose.correct == (g.reason in ("ok", "not_expanded")), (response, loose)
        seen.add(g.reason)
    assert {"ok", "wrong_value", "not_expanded", "unparseable", "unknown_symbol", "too_complex", "bad_chars"} <= seen


def random_sum(rng, depth=0):
    """A random expression of the grammar, built from trusted integers: (text, value at an int x, sympy object).
    The text is rendered with random spacing, signs, * or no *, ^ or **; value and object follow the grammar's
    precedence (^ over products over sums, one sign per term) by construction."""
    sp = lambda: rng.choice(["", "", " "])
    texts, values, objects = [], [], []
    for j in range(rng.randint(1, 3)):
        text, value, obj = random_product(rng, depth)
        sign = rng.choice(["", "+", "-"]) if j == 0 else rng.choice(["+", "-"])
        texts.append(f"{sp()}{sign}{sp()}{text}")
        values.append((lambda v: lambda x: -v(x))(value) if sign == "-" else value)
        objects.append(sympy.Mul(sympy.Integer(-1), obj) if sign == "-" else obj)
    return "".join(texts), lambda x: sum(v(x) for v in values), sympy.Add(*objects)


def random_product(rng, depth):
    text, value, obj = random_power(rng, depth)
    for _ in range(rng.randrange(3)):
        t, v, o = random_power(rng, depth)
        implicit = t[0] in "x(" and rng.random() < 0.5  # 3x, x(x+1): the grammar's implicit products
        join = (" " if text[-1].isalpha() and t[0].isalpha() else "") if implicit else rng.choice(["*", " * "])
        text, value, obj = text + join + t, (lambda a, b: lambda x: a(x) * b(x))(value, v), sympy.Mul(obj, o)
    return text, value, obj


def random_power(rng, depth):
    r = rng.random()
    if r < 0.35 or depth >= 2:
        n = rng.randint(0, 20)
        text, value, obj = rng.choice([str(n), f"0{n}"]), (lambda n: lambda x: n)(n), sympy.Integer(n)
    elif r < 0.75:
        text, value, obj = "x", lambda x: x, sympy.Symbol("x")
    else:
        t, value, obj = random_sum(rng, depth + 1)
        text = f"({t})"
    if rng.random() < 0.3:
        k = rng.randint(0, 3)
        text, value, obj = text + rng.choice(["^", "**", " ^ "]) + str(k), \
            (lambda v, k: lambda x: v(x) ** k)(value, k), sympy.Pow(obj, sympy.Integer(k))
    return text, value, obj


def test_the_grammar_agrees_with_a_plain_reference():
    # what the parser builds from text must be what sympy builds from the same tree directly, and its values
    # at integer points must be what plain int arithmetic on the tree gives
    rng = random.Random(3)
    x = sympy.Symbol("x")
    checked = 0
    for _ in range(400):
        text, value, obj = random_sum(rng)
        poly, expanded, reason = verify._parse_polynomial(text)
        if reason in ("too_complex", "too_long"):  # a random tree over a cap
            continue
        assert reason is None, (text, reason)
        reference = sympy.Poly(obj, x, domain=sympy.ZZ).all_coeffs()[::-1]  # lowest power first
        assert list(poly) == [int(c) for c in reference if reference != [0]], text
        assert all(sum(c * k ** i for i, c in enumerate(poly)) == value(k) for k in range(-3, 4)), text
        checked += 1
    assert checked > 300


def test_the_verifier_needs_no_algebra_library():
    """The polynomials are the verifier's own tuples of integers: no sympy (nor any parser of text) is imported,
    so none can be reached by an answer, however it is written."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import sys, verify; print(sorted(m for m in sys.modules if "
                          "m.split('.')[0] in ('sympy', 'mpmath')))"], capture_output=True, text=True).stdout
    assert out.strip() == "[]", out
