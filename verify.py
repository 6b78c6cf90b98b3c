"""
verify.py: the reward. An exact checker of `<think>...</think><answer>...</answer>` that never evaluates.

The idea: in RLVR the verifier *is* the reward, R(x, y) = grade(y, truth).correct in {0, 1}, so every hole in it
is a reward the policy will learn to collect. The whole rule:
 1. The format: exactly one <think>...</think> (may be empty, holds no tag), then exactly one <answer>...</answer>,
    with only ASCII whitespace before, between and after. Tags are case-sensitive.
 2. One answer: between the answer tags, ONE number literal (12, 005, +12, -0.5, .5, 7/2, \\frac{7}{2}),
    optionally in \\boxed{...}, $...$ and after `x = `; for a polynomial truth, ONE expression of the small
    grammar at the end of this file ("Expand (x+3)(x-2)." -> x^2+x-6).
 3. Compared exactly: numbers as fractions (1/2 == 0.5 == 2/4, no float tolerance: 0.333 is not 1/3),
    polynomials as polynomials over the integers, and an expand task's answer must also be expanded: the
    question echoed back, (x+3)(x-2), *equals* the truth, so a grader of value alone pays for the echo.
Model text is untrusted input: it is read by a tiny grammar under hard caps, and nothing in it is ever evaluated.

Contract
    grade(response, truth, check_form=True) -> Grade(correct, formatted, reason, answer)
    Grade.reward(format_bonus=0.0) = 1.0 * correct + format_bonus * formatted
  response   the decoded text after the prompt, end-of-text token already stripped (`grade_samples` does it).
  truth      one number, or one expanded polynomial in x, read by the answers' own grammar; a truth that is
             neither ("", "abc", "1/0", "2+3", "(x+1)(x-1)", None) raises ValueError: a bug in the data.
  formatted  the tags are right AND the answer is one number (one expression), right or wrong: a bonus for tags
             around anything would pay for junk. correct implies formatted.
  reason     ok, wrong_value, not_expanded (formatted); too_long, too_complex, empty, bad_chars, no_tags,
             repeated_tags, bad_order, text_outside, multiple_values, unknown_symbol, unparseable (not formatted).
             not_expanded: equal to the truth but not in expanded form (correct only with check_form=False, the
             hackable grader kept to show the hack). too_complex: over a cap on nesting, exponent, degree or
             coefficient size. unknown_symbol: a name other than x (y, xx, exp, __import__).

Numbers are refused, never evaluated, when they are expressions (37*41 echoes the question), scientific notation
(1e5), 1,000, %, units, words, nan/inf, non-ASCII digits (int() would read Arabic-Indic ones) or control
characters. Caps, checked before any conversion: 4096 characters per response, 100 per answer, 40 digits per run
of digits.

How this differs from common graders
  1. R1 / CS336-style graders find the closing tags as substrings and tolerate text around them. Here any stray
     text, second answer or missing tag makes the response unformatted: each is a loophole.
  2. sympify-based graders (Math-Verify style) hand the answer string to sympy's parser, which evaluates it
     (9**9**9 never returns; parse_expr runs eval), and pay for any expression of the right value, the question
     itself included. Here a number is one literal, an expression our bounded grammar, and form counts.
  3. Every step is bounded: a 1 MB response or (x+1)^10^10 costs microseconds (`python bench/verify.py` prints
     the worst case over the tests' hostile cases and a fuzzer).

Run: `python verify.py` prints example responses, hostile ones included, with grade, reward and time taken.
"""
import re
import time
from dataclasses import dataclass
from fractions import Fraction

from data.tokenizer import decode

MAX_RESPONSE_CHARS = 4096  # our responses are a few hundred characters; longer is a runaway, and caps all scans
MAX_ANSWER_CHARS = 100     # $\boxed{x = \frac{-123456}{7890}}$ is 33; room for spaces, none for programs
MAX_DIGITS = 40            # per number (run of digits); str -> int is quadratic in length, 40 keeps it cheap

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
EOT = "<|endoftext|>"
WS = " \t\n\r"  # str.strip() alone would also eat unicode spaces and \x1c-\x1f
FORMATTED = ("ok", "wrong_value", "not_expanded")


@dataclass(frozen=True)
class Grade:
    correct: bool
    formatted: bool
    reason: str                # a short code, see the docstring
    answer: str | None = None  # the raw text between the answer tags, when the tags are right

    def reward(self, format_bonus: float = 0.0) -> float:
        """1 if correct, plus format_bonus if well formatted (right or wrong)."""
        return float(self.correct) + (format_bonus if self.formatted else 0.0)


def grade(response: str, truth: str, check_form: bool = True) -> Grade:
    """Grade one response against one truth (see the docstring). check_form=False grades a polynomial answer by
    value alone, so the question echoed back, (x+3)(x-2), is correct (reason still not_expanded): the hackable
    grader, kept to show the hack."""
    target = _parse_truth(truth)  # first, so a bad truth raises whatever the response is
    if not isinstance(response, str):
        raise TypeError(f"response must be decoded text, got {type(response).__name__}")
    reason, answer = _split(response)
    if reason:
        return Grade(False, False, reason)
    if isinstance(target, Fraction):
        value, reason = _parse_answer(answer)
        if reason:
            return Grade(False, False, reason, answer)
        correct = value == target
        return Grade(correct, True, "ok" if correct else "wrong_value", answer)
    poly, expanded, reason = _parse_polynomial(answer)
    if reason:
        return Grade(False, False, reason, answer)
    if poly != target:  # equal as polynomials: the same integer coefficients
        return Grade(False, True, "wrong_value", answer)
    if not expanded:  # reported whatever check_form is, so that a run can count the echoes it pays for
        return Grade(not check_form, True, "not_expanded", answer)
    return Grade(True, True, "ok", answer)


def grade_samples(samples, answers, check_form=True):
    """Every response of a sample.Samples batch, decoded without its EOS and graded against answers (one per
    row). A truncated response (no EOS within max_new_tokens) gets Grade(False, False, "truncated") whatever it
    says so far: it never earns a reward. Returns the texts and the grades."""
    rows = samples.tokens[:, samples.prompt_len:].tolist()
    texts = [decode(row[:n - fin]) for row, n, fin in zip(rows, samples.lengths.tolist(), samples.finished.tolist())]
    return texts, [grade(t, a, check_form) if fin else Grade(False, False, "truncated")
                   for t, a, fin in zip(texts, answers, samples.finished.tolist())]


# ------------------------------------------------------------------------------------------------ numbers
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0/C1 controls except \t \n \r
# [0-9], never \d, and re.ASCII throughout: otherwise \d, \s and \b also match look-alike digits and spaces
_X_PREFIX = re.compile(r"x\s*=\s*", re.ASCII)
_DECIMAL = re.compile(r"([-+]?)([0-9]*)(?:\.([0-9]*))?", re.ASCII)     # 12, -0.5, .5, 5.
_RATIO = re.compile(r"([-+]?)([0-9]+)\s*/\s*([0-9]+)", re.ASCII)        # 7/2, -14 / 4
_LATEX_FRAC = re.compile(r"([-+]?)\\d?frac\{\s*(-?)([0-9]+)\s*\}\{\s*([0-9]+)\s*\}", re.ASCII)
_DIGIT_RUNS = re.compile(r"[0-9]+", re.ASCII)
_SEPARATOR = re.compile(r"[,;=|]|\bor\b|\band\b|\\pm", re.ASCII)  # what hedges are made of


def _parse_truth(truth):
    """The truth, read as an answer is (one grammar, so any truth an answer can match): a Fraction if it is one
    number, else a polynomial (coefficient tuple) if it is an expression of degree >= 1 in x, in expanded form (so that it passes its own
    form rule)."""
    value, reason = _parse_answer(truth) if isinstance(truth, str) else (None, "not text")
    if not reason:
        return value
    if isinstance(truth, str):
        poly, expanded, why = _parse_polynomial(truth)
        if not why and len(poly) >= 2 and expanded:  # degree >= 1
            return poly
        reason += f"; as a polynomial: {why or ('not expanded' if len(poly) >= 2 else 'no x')}"
    raise ValueError(f"truth must be one number or an expanded polynomial in x, like an answer ({reason}), "
                     f"got {truth!r}")


def _split(response):
    """Check the tag structure: (None, answer text) if it is right, else (reason, None). Cheapest checks first,
    and the length cap before anything that scans."""
    if len(response) > MAX_RESPONSE_CHARS:
        return "too_long", None
    if not response.strip(WS):
        return "empty", None
    if _CONTROL.search(response):
        return "bad_chars", None
    counts = [response.count(tag) for tag in TAGS]
    if 0 in counts:  # includes a response cut off by max_new_tokens
        return "no_tags", None
    if max(counts) > 1:
        return "repeated_tags", None
    a, b, c, d = (response.index(tag) for tag in TAGS)
    if not a < b < c < d:  # reordered or nested; with one of each tag this also rules out tags inside <think>
        return "bad_order", None
    outside = response[:a] + response[b + len(TAGS[1]):c] + response[d + len(TAGS[3]):]
    if outside.strip(WS) or EOT in response:  # EOT should have been stripped; text after it is still text
        return "text_outside", None
    return None, response[c + len(TAGS[2]):d]


def _unwrap(text, x_prefix=True):
    """Peel \\boxed{...}, $...$ and `x = `, each at most once, in any order: one notation, never a nest.
    x_prefix=False keeps `x = ` (for a polynomial it is not a notation but a second expression)."""
    used = set()
    for _ in range(3):
        text = text.strip(WS)
        if "$" not in used and len(text) >= 2 and text[0] == text[-1] == "$":
            text, kind = text[1:-1], "$"
        elif "boxed" not in used and text.startswith("\\boxed{") and text.endswith("}"):
            text, kind = text[len("\\boxed{"):-1], "boxed"
        elif x_prefix and "x=" not in used and (m := _X_PREFIX.match(text)):
            text, kind = text[m.end():], "x="
        else:
            break
        used.add(kind)
    return text.strip(WS)


def _literal(core):
    """The exact value of one bare number literal, or None. `core` is ASCII, no run of digits over MAX_DIGITS."""
    if m := _DECIMAL.fullmatch(core):
        sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
        if not whole and not frac:  # "", "+", "."
            return None
        scale = 10 ** len(frac)
        value = Fraction(int(whole or "0") * scale + int(frac or "0"), scale)
    elif m := _RATIO.fullmatch(core):
        sign, num, den = m.groups()
        value = Fraction(int(num), int(den)) if int(den) else None
    elif m := _LATEX_FRAC.fullmatch(core):
        outer, inner, num, den = m.groups()
        if outer and inner:  # -\frac{-1}{2}: one sign per number
            return None
        sign = outer or inner
        value = Fraction(int(num), int(den)) if int(den) else None
    else:
        return None
    return None if value is None else -value if sign == "-" else value


def _screen(text):
    """The checks every answer, number or expression, passes first: None, or the reason it is refused."""
    if not text:
        return "empty"
    if len(text) > MAX_ANSWER_CHARS:
        return "too_long"
    if not text.isascii():  # look-alike digits, minus signs, zero-width spaces, superscripts
        return "bad_chars"
    return None


def _parse_answer(text):
    """(value, None) if `text` is one number in an accepted notation, else (None, reason)."""
    text = text.strip(WS)
    if reason := _screen(text):
        return None, reason
    core = _unwrap(text)
    if max(map(len, _DIGIT_RUNS.findall(core)), default=0) > MAX_DIGITS:  # each int() stays small
        return None, "too_long"
    value = _literal(core)
    if value is not None:
        return value, None
    # a diagnosis only: both earn nothing, but the RL log should show whether the policy hedges or computes
    hedge = len(_DIGIT_RUNS.findall(text)) > 1 and _SEPARATOR.search(text)
    return None, "multiple_values" if hedge else "unparseable"


# ------------------------------------------------------------------------------------------------ polynomials
# The poly family's answers ("Expand (x+3)(x-2)." -> "x^2+x-6"), read by our own recursive-descent parser:
#     sum     := [+|-] product {(+|-) product}    one sign per term: +-, -- and x*-5 are refused
#     product := power {[*] power}                without *, a power starting with x or ( : 3x, 2(x+1), x(x+1)
#     power   := atom [^ k]                       k a literal integer 0..10; ** is read as ^; x^9^9, x^-1 refused
#     atom    := integer | x | ( sum )
# Integers only: no division, no decimals. The one name is x. Caps, checked before anything is computed: the
# number caps, 50 tokens, parentheses 8 deep, and two bounds carried up the parse tree, degree (sum: max, product:
# sum, power: times k) <= 20 and coefficient size in bits (of the sum of |coefficients|: sum: max + 1, product:
# sum, power: times k) <= 512, so every product and power that follows is of small polynomials. Parsing builds
# polynomials as it goes, as tuples of Python integers with our own small arithmetic (_add, _mul): no model text
# ever reaches a general parser (sympify, parse_expr) or eval, and no library is needed. The form rule: a sum of
# monomials c, x^k or c*x^k (c and k integer literals, c first; * optional, 1x, x^1 and ** accepted), no
# parentheses, each power of x at most once, terms in any order.
MAX_TOKENS = 50            # per expression; x^2+x-6 is 7, a long expanded answer about 20
MAX_DEPTH = 8              # parentheses; each level costs four Python frames, and an expanded answer needs none
MAX_EXPONENT = 10          # a literal, so no tower (9**9**9) parses; with the next two caps no power is ever big
MAX_DEGREE = 20            # of any part of an expression, bounded as it is parsed: (x+1)^10(x+1)^10 is the limit
MAX_BITS = 512             # bound on log2(sum of |coefficients|) of any part: ((9^9)^9)^9 has degree 0 but not this
REFUSED = ("unparseable", "unknown_symbol", "too_long", "too_complex")  # what the expression parser raises
# one token of an expression: an integer, a name (only x is allowed, but xx, x2, exp and __import__ must be
# read whole to be refused), or an operator; ** before * so that x**2 is one power
_TOKEN = re.compile(r"[ \t\n\r]*(?:([0-9]+)|([A-Za-z_][A-Za-z0-9_]*)|(\*\*|[-+*^()]))", re.ASCII)
# the form rule over one character per token (n integer, x, ^, *, +, -): a sum of monomials c, x^k, c*x^k
_MONOMIAL = r"(?:(?:n\*?)?x(?:\^n)?|n)"  # the longer alternative first, so that finditer takes nx^n whole
_EXPANDED = re.compile(rf"[-+]?{_MONOMIAL}(?:[-+]{_MONOMIAL})*")

# Each rule's function returns ((polynomial, degree, bits), index of the next token). degree and bits are bounds read
# off the text, and _capped checks them before the polynomial they bound is computed: that order is what makes the cost
# bounded. A refusal raises ValueError(reason), which only _parse_polynomial catches.

def _tokens(core):
    """The tokens of an expression, ** read as ^: "3x**2 - 1" -> ['3', 'x', '^', '2', '-', '1']."""
    tokens, i = [], 0
    while i < len(core):
        m = _TOKEN.match(core, i)
        if not m:  # a character outside the grammar: / . = { ' and the like
            raise ValueError("unparseable")
        number, name, op = m.groups()
        if number and len(number) > MAX_DIGITS:
            raise ValueError("too_long")
        if name and name != "x":
            raise ValueError("unknown_symbol")
        tokens.append("^" if op == "**" else number or name or op)
        if len(tokens) > MAX_TOKENS:
            raise ValueError("too_long")
        i = m.end()
    return tokens


def _peek(tokens, i):
    return tokens[i] if i < len(tokens) else ""


def _capped(degree, bits):
    """The bounds of a part about to be computed, or too_complex."""
    if degree > MAX_DEGREE or bits > MAX_BITS:
        raise ValueError("too_complex")
    return degree, bits


def _trim(coefficients):
    """A polynomial: the tuple of its integer coefficients, lowest power first, with no trailing zeros, so that
    equal polynomials are equal tuples: x^2+x-6 is (-6, 1, 1), 7 is (7,), 0 is ()."""
    coefficients = tuple(coefficients)
    while coefficients and coefficients[-1] == 0:
        coefficients = coefficients[:-1]
    return coefficients


def _add(p, q, sign=1):
    return _trim((p[i] if i < len(p) else 0) + sign * (q[i] if i < len(q) else 0) for i in range(max(len(p), len(q))))


def _mul(p, q):
    out = [0] * (len(p) + len(q) - 1) if p and q else []
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] += a * b
    return _trim(out)


def _sum(tokens, i, depth):
    """sum := [+|-] product {(+|-) product}. bits: |p + q| <= |p| + |q| < 2^(max + 1)."""
    sign, total, degree, bits = "+", (), 0, 0
    if _peek(tokens, i) in ("+", "-"):
        sign, i = tokens[i], i + 1
    while True:
        (poly, d, b), i = _product(tokens, i, depth)
        degree, bits = _capped(max(degree, d), max(bits, b) + 1)
        total = _add(total, poly, 1 if sign == "+" else -1)
        if _peek(tokens, i) not in ("+", "-"):
            return (total, degree, bits), i
        sign, i = tokens[i], i + 1


def _product(tokens, i, depth):
    """product := power {[*] power}; without *, the next power starts with x or ( (3x, x(x+1)), never a digit (x 2).
    bits: |p q| <= |p| |q|."""
    (total, degree, bits), i = _power(tokens, i, depth)
    while (t := _peek(tokens, i)) in ("*", "x", "("):
        (poly, d, b), i = _power(tokens, i + (t == "*"), depth)
        degree, bits = _capped(degree + d, bits + b)
        total = _mul(total, poly)
    return (total, degree, bits), i


def _power(tokens, i, depth):
    """power := atom [^ k], k a literal integer <= MAX_EXPONENT: x^9^9, x^-1, x^x, x^(2) are refused.
    bits: |p^k| <= |p|^k."""
    (base, degree, bits), i = _atom(tokens, i, depth)
    if _peek(tokens, i) != "^":
        return (base, degree, bits), i
    k = _peek(tokens, i + 1)
    if not k.isdigit():
        raise ValueError("unparseable")
    if int(k) > MAX_EXPONENT:
        raise ValueError("too_complex")
    k = int(k)
    degree, bits = _capped(degree * k, bits * k if k else 1)
    power = (1,)
    for _ in range(k):
        power = _mul(power, base)
    return (power, degree, bits), i + 2


def _atom(tokens, i, depth):
    """atom := integer | x | ( sum ), parentheses at most MAX_DEPTH deep. bits: |n| < 2^n.bit_length(), |x| = 1."""
    t = _peek(tokens, i)
    if t.isdigit():
        return (_trim([int(t)]), 0, int(t).bit_length()), i + 1
    if t == "x":
        return ((0, 1), 1, 1), i + 1
    if t != "(":
        raise ValueError("unparseable")
    if depth == MAX_DEPTH:
        raise ValueError("too_complex")
    part, i = _sum(tokens, i + 1, depth + 1)
    if _peek(tokens, i) != ")":
        raise ValueError("unparseable")
    return part, i + 1


def _is_expanded(tokens):
    """The form rule: monomials c, x^k, c*x^k joined by + and -, no parentheses, each power of x at most once."""
    kinds = "".join("n" if t.isdigit() else t for t in tokens)  # one character per token: "nx^n-nx-n"
    if not _EXPANDED.fullmatch(kinds):
        return False
    powers = [int(tokens[m.end() - 1]) if "^" in m[0] else int("x" in m[0]) for m in re.finditer(_MONOMIAL, kinds)]
    return len(powers) == len(set(powers))


def _parse_polynomial(text):
    """(the polynomial's coefficients, whether `text` is in expanded form, None) if `text` is one expression of the grammar, else
    (None, None, reason)."""
    text = text.strip(WS)
    if reason := _screen(text):
        return None, None, reason
    core = _unwrap(text, x_prefix=False)
    try:
        tokens = _tokens(core)
        (poly, _, _), i = _sum(tokens, 0, 0)
        if i != len(tokens):  # what the grammar cannot continue with: 5 6, (x+1)2, x), x^2^2
            raise ValueError("unparseable")
    except ValueError as e:
        if e.args[0] not in REFUSED:  # a bug, not a refusal: let it be seen
            raise
        # a diagnosis only, as for numbers: "x^2+1 or x^2-1" hedges
        return None, None, "multiple_values" if _SEPARATOR.search(core) else e.args[0]
    return poly, _is_expanded(tokens), None


def calculate(text):
    """The integer value of an arithmetic expression, integers, + - * and parentheses, read by the same grammar
    under the same caps; None for anything else (a name, a power, a division, a cap exceeded). The calculator a
    policy may call (tools.py): like the grader, it never evaluates text."""
    try:
        tokens = _tokens(text.strip(WS))
        if "x" in tokens or "^" in tokens:  # numbers only: no unknown, no power
            return None
        (poly, _, _), i = _sum(tokens, 0, 0)
    except ValueError as e:
        if e.args[0] not in REFUSED:
            raise
        return None
    return (poly[0] if poly else 0) if i == len(tokens) else None


if __name__ == "__main__":
    def wrap(answer, think="3x=7"):
        return f"<think>{think}</think><answer>{answer}</answer>"

    examples = [
        (wrap("7/3"), "7/3"), (wrap(" x = \\frac{14}{6} "), "7/3"), (wrap("$\\boxed{2.5}$"), "5/2"),
        (wrap("-0"), "0"), (wrap("7/2"), "7/3"), (wrap("2.333"), "7/3"), ("7/3", "7/3"),
        (wrap("7/3") + " or 8/3", "7/3"), ("<think>x=7/3</think><answer></answer>", "7/3"),
        (wrap("7/3") + wrap("8/3"), "7/3"), (wrap("7/3 or 8/3"), "7/3"), (wrap("x = 6 = 5"), "5"),
        (wrap("37*41"), "1517"), (wrap("1e5"), "100000"), (wrap("\u0665"), "5"), (wrap("\uff15"), "5"),
        (wrap("__import__('os').system('rm -rf /')"), "0"), (wrap("9**9**9**9"), "0"), (wrap("9" * 60), "0"),
        (wrap("5\x00"), "5"), (wrap("(" * 1000 + "5" + ")" * 1000), "5"), (wrap("5") + " " * 1_000_000, "5"),
        # "Expand (x+3)(x-2).": the expanded answer in any order and spelling, then what a policy might try
        (wrap("x^2+x-6", "x*x=x^2"), "x^2+x-6"), (wrap("-6 + x + 1x**2"), "x^2+x-6"), (wrap("x^2-x-6"), "x^2+x-6"),
        (wrap("(x+3)(x-2)"), "x^2+x-6"), (wrap("x^2+3x-2x-6"), "x^2+x-6"), (wrap("x^2+y-6"), "x^2+x-6"),
        (wrap("x^9^9^9"), "x^2+x-6"), (wrap("(x+1)^10(x+1)^10(x+1)^10"), "x^2+x-6"), (wrap("((9^9)^9)^9"), "x^2+x-6"),
        (wrap("x^2+x\u2212" + "6"), "x^2+x-6"),
    ]
    print(f"{'reason':<16}{'correct':>8}{'fmt':>6}{'reward(+0.1)':>14}{'us':>8}  response")
    for response, truth in examples:
        t0 = time.perf_counter()
        g = grade(response, truth)
        us = (time.perf_counter() - t0) * 1e6
        shown = repr(response) if len(response) <= 70 else repr(response[:50]) + f"...({len(response)} chars)"
        print(f"{g.reason:<16}{g.correct!s:>8}{g.formatted!s:>6}{g.reward(0.1):>14.1f}{us:>8.1f}"
              f"  {shown}  truth={truth}")
    print("\nthe echo hack: the question's own factors, graded by value alone and by value and form")
    for check_form in (False, True):
        g = grade(wrap("(x+3)(x-2)"), "x^2+x-6", check_form=check_form)
        print(f"  check_form={check_form!s:<5}  (x+3)(x-2) -> {g.reason}, reward {g.reward():.0f}")
