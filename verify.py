"""
verify.py: the reward. An exact checker of `<think>...</think><answer>...</answer>` that never evaluates.

The idea: in RLVR the verifier *is* the reward, R(x, y) = grade(y, truth).correct in {0, 1}, so every hole in
it is a reward the policy will learn to collect. Model text is therefore untrusted input: it is read by a tiny
grammar under hard caps, and nothing in it is ever evaluated.

Contract
    grade(response, truth) -> Grade(correct, formatted, reason, answer)
    Grade.reward(format_bonus=0.0) = 1.0 * correct + format_bonus * formatted
  response   the decoded text after the prompt, end-of-text token already stripped.
  truth      one number, read by the same grammar and caps as an answer (below): "132", "-38", "7/2" from our
             task generator, and also "0.5", "+5", "005", "\\frac{7}{2}" from other data. A truth that is not
             one number ("", "abc", "1/0", "2+3", None) raises ValueError, whatever the response: it is a bug in
             the data, not a bad sample.
  format     exactly one <think>...</think> (may be empty, holds no tag), then exactly one <answer>...</answer>,
             with only ASCII whitespace before, between and after. Tags are case-sensitive.
  answer     ONE number literal: 12, 005, +12, -0.5, .5, 5., 7/2, 14/4, \\frac{7}{2} (or \\dfrac), optionally
             wrapped, at most once each and in any order, in \\boxed{...}, $...$ and an `x = ` prefix.
             Values compare as exact fractions: 1/2 == 0.5 == 2/4 == .5, 5 == 5.0 == 005 == +5, -0 == 0.
  formatted  the tags are right AND the answer is one number, right or wrong. A bonus for tags around
             anything at all would pay the policy for junk; correct implies formatted.
  reason     ok, wrong_value (formatted); too_long, empty, bad_chars, no_tags, repeated_tags, bad_order,
             text_outside, multiple_values, unparseable (not formatted).

Rejected, never evaluated: expressions (37*41, 2+3: they echo the question and are right for free),
scientific notation (1e5, 10^5: our answers never need it, and refusing exponents is the cheapest exponent
cap), 1,000 (a comma reads as a hedge), %, units, words, nan/inf/oo, non-ASCII digits (int() would accept
Arabic-Indic and fullwidth ones), control characters. Caps, checked before any conversion: 4096 characters per
response, 100 per answer, 40 digits per number (per run of digits: 123/456 and 1.5 are two numbers).

How this differs from R1 / CS336-style graders
  1. They find the closing tags as substrings and tolerate text before, between or after them. Here any stray
     text, second answer or missing tag makes the response unformatted: each is a loophole otherwise.
  2. They normalise the answer string and ask sympy whether it equals the truth. Sympy's parser evaluates its
     input, and any expression with the right value passes, the question itself included. Here the answer is
     one literal or nothing.
  3. Exact rationals, no float tolerance: 0.333 is not 1/3.
  4. Every step is bounded: a 1 MB response or 9**9**9**9 costs microseconds.

Run: `python verify.py` prints example responses, hostile ones included, with grade, reward and time taken.
"""
import re
import time
from dataclasses import dataclass
from fractions import Fraction

MAX_RESPONSE_CHARS = 4096  # our responses are a few hundred characters; longer is a runaway, and caps all scans
MAX_ANSWER_CHARS = 100     # $\boxed{x = \frac{-123456}{7890}}$ is 33; room for spaces, none for programs
MAX_DIGITS = 40            # per number (run of digits); str -> int is quadratic in length, 40 keeps it cheap

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
EOT = "<|endoftext|>"
WS = " \t\n\r"  # str.strip() alone would also eat unicode spaces and \x1c-\x1f
FORMATTED = ("ok", "wrong_value")

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0/C1 controls except \t \n \r
# [0-9], never \d, and re.ASCII throughout: otherwise \d, \s and \b also match look-alike digits and spaces
_X_PREFIX = re.compile(r"x\s*=\s*", re.ASCII)
_DECIMAL = re.compile(r"([-+]?)([0-9]*)(?:\.([0-9]*))?", re.ASCII)     # 12, -0.5, .5, 5.
_RATIO = re.compile(r"([-+]?)([0-9]+)\s*/\s*([0-9]+)", re.ASCII)        # 7/2, -14 / 4
_LATEX_FRAC = re.compile(r"([-+]?)\\d?frac\{\s*(-?)([0-9]+)\s*\}\{\s*([0-9]+)\s*\}", re.ASCII)
_DIGIT_RUNS = re.compile(r"[0-9]+", re.ASCII)
_SEPARATOR = re.compile(r"[,;=|]|\bor\b|\band\b|\\pm", re.ASCII)  # what hedges are made of


@dataclass(frozen=True)
class Grade:
    correct: bool
    formatted: bool
    reason: str                # a short code, see the docstring
    answer: str | None = None  # the raw text between the answer tags, when the tags are right

    def reward(self, format_bonus: float = 0.0) -> float:
        """1 if correct, plus format_bonus if well formatted (right or wrong): the only reward RL ever sees."""
        return float(self.correct) + (format_bonus if self.formatted else 0.0)


def _parse_truth(truth):
    """The exact value of the truth, read as an answer is: one grammar, so any truth an answer can match."""
    value, reason = _parse_answer(truth) if isinstance(truth, str) else (None, "not text")
    if reason:
        raise ValueError(f"truth must be one number, like an answer ({reason}), got {truth!r}")
    return value


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


def _unwrap(text):
    """Peel \\boxed{...}, $...$ and `x = `, each at most once, in any order: one notation, never a nest."""
    used = set()
    for _ in range(3):
        text = text.strip(WS)
        if "$" not in used and len(text) >= 2 and text[0] == text[-1] == "$":
            text, kind = text[1:-1], "$"
        elif "boxed" not in used and text.startswith("\\boxed{") and text.endswith("}"):
            text, kind = text[len("\\boxed{"):-1], "boxed"
        elif "x=" not in used and (m := _X_PREFIX.match(text)):
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


def _parse_answer(text):
    """(value, None) if `text` is one number in an accepted notation, else (None, reason)."""
    text = text.strip(WS)
    if not text:
        return None, "empty"
    if len(text) > MAX_ANSWER_CHARS:
        return None, "too_long"
    if not text.isascii():  # look-alike digits, minus signs, zero-width spaces
        return None, "bad_chars"
    core = _unwrap(text)
    if max(map(len, _DIGIT_RUNS.findall(core)), default=0) > MAX_DIGITS:  # each int() stays small
        return None, "too_long"
    value = _literal(core)
    if value is not None:
        return value, None
    # a diagnosis only: both earn nothing, but the RL log should show whether the policy hedges or computes
    hedge = len(_DIGIT_RUNS.findall(text)) > 1 and _SEPARATOR.search(text)
    return None, "multiple_values" if hedge else "unparseable"


def grade(response: str, truth: str) -> Grade:
    target = _parse_truth(truth)  # first, so a bad truth raises whatever the response is
    if not isinstance(response, str):
        raise TypeError(f"response must be decoded text, got {type(response).__name__}")
    reason, answer = _split(response)
    if reason:
        return Grade(False, False, reason)
    value, reason = _parse_answer(answer)
    if reason:
        return Grade(False, False, reason, answer)
    correct = value == target
    return Grade(correct, True, "ok" if correct else "wrong_value", answer)


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
    ]
    print(f"{'reason':<16}{'correct':>8}{'fmt':>6}{'reward(+0.1)':>14}{'us':>8}  response")
    for response, truth in examples:
        t0 = time.perf_counter()
        g = grade(response, truth)
        us = (time.perf_counter() - t0) * 1e6
        shown = repr(response) if len(response) <= 70 else repr(response[:50]) + f"...({len(response)} chars)"
        print(f"{g.reason:<16}{g.correct!s:>8}{g.formatted!s:>6}{g.reward(0.1):>14.1f}{us:>8.1f}"
              f"  {shown}  truth={truth}")
