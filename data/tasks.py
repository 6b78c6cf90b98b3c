"""
data/tasks.py: synthetic arithmetic problems whose answers a program can check, and an imperfect teacher.

The idea: RLVR needs problems with exact answers. Five families, each with a worked solution a small model can
follow one token at a time:
    add   "What is 47+85?"   columns right to left:  7+5+0=12 r=2 / 4+8+1=13 r=32 / r=132
    sub   "What is 47-85?"   47<85 so -(85-47), then columns with borrows:  5-7-0=-2+10=8 r=8 / 8-4-1=3 r=38
    mul   "What is 47*6?"    one partial product per digit of the multiplier, digit by digit, then their sum
    lin   "Solve 3x+5=12."   3x=12-5=7 / x=7/3           (the answer may be a reduced fraction)
    poly  "Expand (2x+3)(x-5)."   each product of a term by a term, in a fixed order, then the x terms collected:
                             2x*x=2x^2 / 2x*-5=-10x / 3*x=3x / 3*-5=-15 / -10x+3x=-7x / 2x^2-7x-15
The formats are chosen for a tiny model with learned positions. Sums and products are written with two digits
(07, not 7), so each step of an addition sits at the same place in every problem of a size (a design choice; our
one comparison was inconclusive). A subtraction column computes first and borrows after (5-7-0=-2+10=8), so no
step has to look ahead. In one comparison (700 pretraining steps, think_prob 0.5, then RL at lr 1e-4, seed 1337)
held-out accuracy was 0.88 after 60 RL steps with the older borrow-first format (15-7-0=8; commit bfbe904) and
0.975 after 50 with this one (`OMP_NUM_THREADS=1 python train.py --rl_eval_interval=25`).
Answers are exact strings: integers ("132", "-38"), reduced fractions ("7/3", "-1/2") and, for poly, the expanded
polynomial in one canonical spelling: descending degree, ^ for powers, no 1x or x^1, -x, no spaces ("2x^2-x-15").
The verifier accepts any expanded spelling of it, but not the factored question echoed back (verify.py says why).

The pretraining corpus imitates an imperfect teacher. Every response is
    <think>{worked solution or nothing}</think><answer>{answer}</answer>
and two knobs say how the teacher is imperfect: `think_prob`, the share of demonstrations that show their work
(the rest answer directly, which is much harder for a small model), and `error_prob`, the share that contain one
mistake (a wrong digit, which propagates to a wrong answer). The corpus' own accuracy is 1 - error_prob: the
"imitation ceiling" that supervised training cannot beat but RL with a verifier can.

Thinking on and off (Qwen3's thinking-mode fusion, `--thinking=fusion`): a prompt may end in a flag, "What is
47+85? /think" or "/no_think", and then the teacher does as it says: a worked solution, or an empty think block and
a direct answer, wrong on error_prob of problems either way (`with_mode`).

Held-out split: a problem belongs to the test split iff a hash of its text says so (1 in 10), so no test problem
can ever appear in training, whatever the seed (the hash reads the question without its flag).

Run: `python data/tasks.py` prints examples of every family as the model sees them, and the corpus accuracy.
"""
import hashlib
import random
from dataclasses import dataclass
from fractions import Fraction

import torch

from data.tokenizer import EOS_ID, PAD_ID, encode

FAMILIES = ("add", "sub", "mul", "lin", "poly")


MODES = ("think", "no_think")  # Qwen3's soft switches: the prompt asks for a worked solution, or for none


@dataclass(frozen=True)
class Problem:
    family: str
    prompt: str       # the text the model is given, its mode flag included
    answer: str       # exact answer: "132", "-38", "7/3"
    solution: str     # a correct worked solution (the content of the think block)
    mode: str = None  # None (no flag: the teacher thinks on think_prob of problems) or one of MODES


def with_mode(problem, mode):
    """The problem with its prompt flagged for `mode` (one of MODES, or None to drop the flag):
    "What is 47+85?\n" -> "What is 47+85? /think\n". The flag is plain text, as Qwen3's soft switch is in its
    chat turn: the vocabulary stays as it is, and at one byte per token /think and /no_think differ from their
    third token on."""
    if mode not in MODES + (None,):
        raise ValueError(f"mode must be one of {MODES} or None, got {mode!r}")
    q = question(problem)
    return Problem(problem.family, q if mode is None else f"{q[:-1]} /{mode}\n", problem.answer, problem.solution, mode)


def question(problem):
    """The prompt without its mode flag: what the split and the solvers read."""
    return problem.prompt if problem.mode is None else problem.prompt.removesuffix(f" /{problem.mode}\n") + "\n"


def fmt(q):
    """Exact answer string of a rational: "7", "-7/2" (Fraction is always reduced); or of a polynomial given as
    its coefficients, highest degree first: (2, -1, -15) -> "2x^2-x-15", zero terms left out."""
    if isinstance(q, tuple):
        return signed_sum([monomial(k, len(q) - 1 - i) for i, k in enumerate(q) if k]) or "0"
    q = Fraction(q)
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


def monomial(k, power):
    """k x^power as our answers spell it: (6, 2) -> "6x^2", (-1, 1) -> "-x", (1, 1) -> "x", (-15, 0) -> "-15"."""
    if power == 0 or k == 0:
        return str(k)
    x = "x" if power == 1 else f"x^{power}"
    return x if k == 1 else f"-{x}" if k == -1 else f"{k}{x}"


def signed_sum(terms):
    """Spelled terms joined with their signs: ["2x^2", "-x", "3"] -> "2x^2-x+3"."""
    return "".join(t if i == 0 or t.startswith("-") else "+" + t for i, t in enumerate(terms))


def digits_of(n, width):
    """Least significant digit first, padded with zeros: digits_of(47, 3) = [7, 4, 0]."""
    return [(n // 10 ** i) % 10 for i in range(width)]


def nudge(d, rng, hi=9):
    """A wrong value next to the right one in [0, hi]: the most typical slip."""
    return d + 1 if d == 0 or (d < hi and rng.random() < 0.5) else d - 1


# --- worked solutions. Each takes `slip`: None, or a random.Random that plants one wrong result in one step
# (a sum or product off by one). The later steps are carried out correctly from the wrong intermediate, so the
# mistake propagates (through the carry too) to what the teacher concludes: true answer ± 10^k, never the truth.
# They return (solution text, the answer the text concludes).

def add_steps(a, b, slip=None):
    width = max(len(str(a)), len(str(b)))
    bad = slip.randrange(width) if slip else -1
    lines, r, carry = [], "", 0
    for i, (x, y) in enumerate(zip(digits_of(a, width), digits_of(b, width))):
        s = x + y + carry
        s = nudge(s, slip, hi=19) if i == bad else s  # a slip in this column's sum; its carry follows
        r = str(s % 10) + r
        lines.append(f"{x}+{y}+{carry}={s:02d} r={r}")
        carry = s // 10
    r = (str(carry) if carry else "") + r
    value = int(r)
    lines.append(f"r={value}")
    return "\n".join(lines), value


def sub_steps(a, b, slip=None):
    if a < b:
        text, value = sub_steps(b, a, slip)
        return f"{a}<{b} so -({b}-{a})\n{text}\n={fmt(-value)}", -value
    width = len(str(a))
    bad = slip.randrange(width) if slip else -1
    lines, r, borrow = [], "", 0
    for i, (x, y) in enumerate(zip(digits_of(a, width), digits_of(b, width))):
        raw = x - y - borrow  # compute first, then borrow if it went below zero: each step is local
        d = raw + 10 if raw < 0 else raw
        d = nudge(d, slip) if i == bad else d
        r = str(d) + r
        lines.append(f"{x}-{y}-{borrow}={raw}" + (f"+10={d}" if raw < 0 else "") + f" r={r}")
        borrow = 1 if raw < 0 else 0
    value = int(r)
    lines.append(f"r={value}")
    return "\n".join(lines), value


def mul_steps(a, b, slip=None):
    """a*b with b's digits one partial product each: 47*6 -> 7*6+0=42 r=2 / 4*6+4=28 r=282 / p=282."""
    bd = digits_of(b, len(str(b)))
    width = len(str(a))
    bad = (slip.randrange(len(bd)), slip.randrange(width)) if slip else (-1, -1)
    lines, partials = [], []
    for j, y in enumerate(bd):
        r, carry = "", 0
        for i, x in enumerate(digits_of(a, width)):
            p = x * y + carry
            p = nudge(p, slip, hi=89) if (j, i) == bad else p
            r = str(p % 10) + r
            lines.append(f"{x}*{y}+{carry}={p:02d} r={r}")
            carry = p // 10
        partial = int((str(carry) if carry else "") + r) * 10 ** j
        partials.append(partial)
        lines.append(f"p={partial}")
    value = sum(partials)
    if len(partials) > 1:
        lines.append("+".join(map(str, partials)) + f"={value}")
    return "\n".join(lines), value


def lin_steps(a, b, c, slip=None):
    """a*x+b=c -> a*x = c-b -> x = (c-b)/a, reduced."""
    rhs = c - b
    if slip:  # the slip is in the subtraction; everything after follows from it
        rhs += slip.choice((-1, 1))
    sign_b = f"-{b}" if b >= 0 else f"+{-b}"
    lines = [f"{a}x={c}{sign_b}={rhs}"]
    value = Fraction(rhs, a)
    shown = f"{rhs}/{a}"
    lines.append(f"x={shown}" if fmt(value) == shown else f"x={shown}={fmt(value)}")
    return "\n".join(lines), value


def poly_steps(a, b, c, d, slip=None):
    """(ax+b)(cx+d): the four products of a term by a term, always in the order first*first, first*last,
    last*first, last*last, then the two x terms collected, then the answer. Returns its coefficients (x^2, x, 1)."""
    left, right = (monomial(a, 1), monomial(b, 0)), (monomial(c, 1), monomial(d, 0))
    pairs = [(0, 0, 2), (0, 1, 1), (1, 0, 1), (1, 1, 0)]  # (term of the left factor, of the right, power of x)
    products = [a * c, a * d, b * c, b * d]
    bad = slip.randrange(len(products) + 1) if slip else -1  # one of the four products, or the collection
    lines = []
    for j, (i, k, power) in enumerate(pairs):
        if j == bad:  # off by one, away from zero (no term of the factors is 0, so no product is): x*x=2x^2, not 0
            products[j] += slip.choice((-1, 1)) if abs(products[j]) > 1 else products[j]
        lines.append(f"{left[i]}*{right[k]}={monomial(products[j], power)}")
    middle = products[1] + products[2] + (slip.choice((-1, 1)) if bad == len(products) else 0)
    lines.append(f"{signed_sum([monomial(products[1], 1), monomial(products[2], 1)])}={monomial(middle, 1)}")
    value = (products[0], middle, products[3])
    lines.append(fmt(value))
    return "\n".join(lines), value


def make_problem(family, rng, digits=2):
    """One random problem of a family. `digits` (>= 1) is the difficulty knob: operand digits (mul: of the
    multiplicand, with a one-digit multiplier below 3 digits; lin: of the constants b and c; poly: the constants
    b, d of (ax+b)(cx+d) are nonzero with at most `digits` digits, -9..9 at 1, and the leading coefficients a, c
    are 1 to 3 at any size, so that every product of the solution is one step of the times table at digits=1)."""
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    n = lambda d: rng.randrange(10 ** (d - 1) if d > 1 else 0, 10 ** d)
    if family == "add":
        a, b = n(digits), n(digits)
        return Problem(family, f"What is {a}+{b}?\n", fmt(a + b), add_steps(a, b)[0])
    if family == "sub":
        a, b = n(digits), n(digits)
        return Problem(family, f"What is {a}-{b}?\n", fmt(a - b), sub_steps(a, b)[0])
    if family == "mul":
        a, b = n(digits), n(1 if digits < 3 else digits - 1)
        return Problem(family, f"What is {a}*{b}?\n", fmt(a * b), mul_steps(a, b)[0])
    if family == "lin":
        a = rng.choice([k for k in range(-9, 10) if k not in (-1, 0, 1)])
        b, c = rng.choice((-1, 1)) * n(digits), n(digits)
        lhs = f"{a}x{'+' if b >= 0 else '-'}{abs(b)}"
        return Problem(family, f"Solve {lhs}={c}.\n", fmt(Fraction(c - b, a)), lin_steps(a, b, c)[0])
    if family == "poly":
        a, c = rng.randint(1, 3), rng.randint(1, 3)
        b, d = (rng.choice((-1, 1)) * rng.randint(1, 10 ** digits - 1) for _ in range(2))
        factors = "".join(f"({signed_sum([monomial(k, 1), monomial(m, 0)])})" for k, m in ((a, b), (c, d)))
        text, value = poly_steps(a, b, c, d)
        return Problem(family, f"Expand {factors}.\n", fmt(value), text)
    raise ValueError(f"unknown task family {family!r}; choose from {FAMILIES}")


def split_of(problem, test_share=0.1):
    """'test' or 'train', from a hash of the prompt: stable across seeds, runs and machines."""
    h = int.from_bytes(hashlib.sha256(question(problem).encode()).digest()[:8], "big")  # both modes, one split
    return "test" if h % 1000 < test_share * 1000 else "train"


def generate_problems(n, seed, split="train", families=FAMILIES, digits=2, distinct=False):
    """n problems of one split, families drawn uniformly, deterministic given the arguments; with distinct, no
    prompt twice. digits is an int for all families or a dict {family: digits}. A split that cannot be filled
    (too few problems of that size exist, e.g. at digits=1) raises ValueError after a bounded number of draws."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    for f in families:
        if f not in FAMILIES:
            raise ValueError(f"unknown task family {f!r}; choose from {FAMILIES}")
    rng = random.Random(seed)
    out, seen = [], set()
    for _ in range(100 * n + 10_000):
        if len(out) == n:
            return out
        family = rng.choice(families)
        p = make_problem(family, rng, digits[family] if isinstance(digits, dict) else digits)
        if split_of(p) == split and not (distinct and p.prompt in seen):
            out.append(p)
            seen.add(p.prompt)
    raise ValueError(f"only {len(out)} {'distinct ' if distinct else ''}{split} problems found for {n} "
                     f"(families {','.join(families)}, digits {digits}): ask for fewer, or for bigger problems")


def operands(problem):
    """The integers a problem was made from, read back from its prompt (our own text, parsed simply)."""
    q = question(problem).split(" ", 2)[-1].rstrip("?.\n")
    if problem.family == "lin":
        lhs, c = q.split("=")
        return tuple(map(int, lhs.split("x") + [c]))
    if problem.family == "poly":  # "(2x+3)(x-5)" -> "2x", "+3" and "x", "-5"
        (a, b), (c, d) = (factor.split("x") for factor in q[1:-1].split(")("))
        return int(a or 1), int(b), int(c or 1), int(d)
    return tuple(map(int, q.split({"add": "+", "sub": "-", "mul": "*"}[problem.family])))


SOLVERS = dict(add=add_steps, sub=sub_steps, mul=mul_steps, lin=lin_steps, poly=poly_steps)


def recompute(problem, slip):
    """Re-solve a problem from its prompt with a slip planted."""
    return SOLVERS[problem.family](*operands(problem), slip)


TOOL_FAMILIES = ("mul", "lin", "poly")  # where a calculator (tools.py) takes the teacher's hardest arithmetic


def tool_steps(problem, slip=None):
    """The worked solution of a teacher who calls the calculator for the arithmetic a small model does worst in
    its head: mul's product, lin's subtraction, poly's four products, each written `<<expression=` and answered
    `result>>` by the environment. Returns (text, value) like the solvers. A slip is in the teacher's own work,
    never in the calculator's output: mul and lin copy the result wrong, poly collects its x terms wrong."""
    ops = operands(problem)
    if problem.family == "mul":
        (a, b), product = ops, ops[0] * ops[1]
        used = wrong_digit(product, slip) if slip else product
        return f"<<{a}*{b}={product}>>\np={used}", used
    if problem.family == "lin":
        a, b, c = ops
        used = c - b + (slip.choice((-1, 1)) if slip else 0)
        value, shown = Fraction(used, a), f"{used}/{a}"
        return f"{a}x=<<{c}-({b})={c - b}>>\nx={shown}" + ("" if fmt(value) == shown else f"={fmt(value)}"), value
    a, b, c, d = ops
    left, right = (monomial(a, 1), monomial(b, 0)), (monomial(c, 1), monomial(d, 0))
    lines, products = [], []
    for i, k, power, (p, q) in ((0, 0, 2, (a, c)), (0, 1, 1, (a, d)), (1, 0, 1, (b, c)), (1, 1, 0, (b, d))):
        products.append(p * q)
        x = {2: "x^2", 1: "x", 0: ""}[power]
        lines.append(f"{left[i]}*{right[k]}=<<{p}*({q})={p * q}>>{x}")
    middle = products[1] + products[2] + (slip.choice((-1, 1)) if slip else 0)
    lines.append(f"{signed_sum([monomial(products[1], 1), monomial(products[2], 1)])}={monomial(middle, 1)}")
    value = (products[0], middle, products[3])
    return "\n".join(lines + [fmt(value)]), value


def wrong_digit(value, rng):
    """An integer with one digit nudged: the most typical slip in a number copied or answered directly."""
    digits = str(abs(value))
    k = rng.randrange(len(digits))
    wrong = int(digits[:k] + str(nudge(int(digits[k]), rng)) + digits[k + 1:])
    return wrong if value >= 0 else -wrong


def response(think, answer):
    return f"<think>{think}</think><answer>{answer}</answer>"


def demonstration(problem, rng, think_prob=0.5, error_prob=0.0, echo_prob=0.0, tool_prob=0.0, check_lines=0):
    """The imperfect teacher's response to a problem (without EOS, which the tokenizing code appends). A flagged
    problem gets what its flag asks for (/no_think: an empty think block); an unflagged one shows its work with
    probability think_prob. error_prob applies to both. A sloppy teacher (echo_prob, poly only) answers that
    share of problems with the question itself, "(x+3)(x-2)": equal to the truth but not expanded, so not right.
    A teacher with a calculator (tool_prob, mul, lin and poly) calls it in that share of its worked solutions.
    A verbose teacher (check_lines = k) ends a worked solution with 0 to k lines restating its answer, right or
    wrong: length that says nothing about correctness (free length, for Dr. GRPO's length bias).
    Returns (response text, whether its answer is right, whether it shows its work)."""
    if echo_prob and problem.family == "poly" and rng.random() < echo_prob:
        return response("", question(problem).split(" ", 1)[1].rstrip(".\n")), False, False
    thinks = rng.random() < think_prob if problem.mode is None else problem.mode == "think"
    tool = tool_prob and thinks and problem.family in TOOL_FAMILIES and rng.random() < tool_prob
    checks = rng.randint(0, check_lines) if check_lines and thinks else 0
    if rng.random() >= error_prob:
        text = tool_steps(problem)[0] if tool else problem.solution if thinks else ""
        return response(text + f"\ncheck {problem.answer}" * checks, problem.answer), True, thinks
    text, value = (tool_steps if tool else recompute)(problem, rng)
    if not thinks and problem.family == "poly":  # a direct answer with one coefficient off by one (the slip's)
        text = ""
    elif not thinks:  # a direct answer with one wrong digit
        truth = Fraction(problem.answer)
        value, text = Fraction(wrong_digit(truth.numerator, rng), truth.denominator), ""
    return response(text + f"\ncheck {fmt(value)}" * checks, fmt(value)), False, thinks


# --- the teacher's corpus as training pairs, and the lengths a task needs

def pretrain_batch(problems, rng, think_prob, error_prob, fusion=False, echo_prob=0.0, tool_prob=0.0,
                   check_lines=0):
    """The teacher's demonstrations of `problems` as next-token pairs x, y (B, T). Cross-entropy is taken on the
    response and its EOS only: y is -1 on the prompt, on what the calculator wrote (tools.py: the model did not
    write it, as RL's loss mask says) and on the padding. With fusion each prompt is flagged /think (with
    probability think_prob) or /no_think, and the teacher does as the flag says."""
    rows, tool_positions = [], []
    for p in problems:
        if fusion:
            p = with_mode(p, "think" if rng.random() < think_prob else "no_think")
        ids, skip = encode(p.prompt), []
        demo = demonstration(p, rng, think_prob, error_prob, echo_prob, tool_prob, check_lines)[0]
        for piece, by_tool in tool_pieces(demo):
            skip += list(range(len(ids), len(ids) + len(encode(piece)))) if by_tool else []
            ids += encode(piece)
        rows.append((ids + [EOS_ID], len(encode(p.prompt))))
        tool_positions.append(skip)
    x, y = supervised_pairs(rows)
    for i, skip in enumerate(tool_positions):
        y[i, [k - 1 for k in skip]] = -1  # y[k - 1] is token k's target
    return x, y


def tool_pieces(text):
    """A response as (piece, written by the calculator) pairs: "<<4*5=" is the model's, "20>>" the tool's (the
    result up to and including the closing >>)."""
    pieces, rest = [], text
    while "<<" in rest and "=" in rest.split("<<", 1)[1]:
        head, call = rest.split("<<", 1)
        expression, tail = call.split("=", 1)
        result = tail.split(">>", 1)[0] + ">>"
        pieces += [(head + "<<" + expression + "=", False), (result, True)]
        rest = tail[len(result):]
    return pieces + [(rest, False)]


def supervised_pairs(rows):
    """(token ids, prompt length) rows as right-padded next-token pairs x, y (B, T), y = -1 on the prompt and the
    padding so that cross-entropy sees the response (and its EOS) only."""
    T = max(len(ids) for ids, _ in rows) - 1
    x = torch.full((len(rows), T), PAD_ID, dtype=torch.long)  # (B, T)
    y = torch.full((len(rows), T), -1, dtype=torch.long)  # (B, T)
    for i, (ids, n_prompt) in enumerate(rows):
        x[i, :len(ids) - 1] = torch.tensor(ids[:-1])
        y[i, n_prompt - 1:len(ids) - 1] = torch.tensor(ids[n_prompt:])
    return x, y


def fit_lengths(max_new_tokens, block_size, problems, model_block_size=None, pretrains=True, tool_prob=0.0,
                check_lines=0):
    """max_new_tokens and block_size for a task, each filled in when 0: 1.2 x the teacher's longest response
    rounded up to a multiple of 16, and the longest prompt plus the room sampling and pretraining need, rounded up
    to a multiple of 64 (80 / 128 for the default task, 160 / 192 for the 3-digit mix of add, sub, mul, lin). The
    longest response is a worked solution with a slip, the shortest a direct answer, EOS included; 8 tokens of
    margin cover a longer one these problems miss (with tool_prob > 0, the calculator's solutions count too, and
    check_lines as many restating lines). With a loaded model the block size is the model's. Raises ValueError naming what does not fit."""
    rng = random.Random(0)
    longest = max(len(encode(demonstration(p, rng, 1.0, e, tool_prob=t)[0])) + 1 for p in problems for e in (0, 1)
                  for t in ((0, 1) if tool_prob else (0,)))
    longest += check_lines * max(len(encode(f"\ncheck {p.answer}")) + 1 for p in problems)  # + 1: a slip's sign
    shortest = min(len(encode(response("", p.answer))) + 1 for p in problems)
    prompt = max(len(encode(p.prompt)) for p in problems)
    max_new_tokens = max_new_tokens or -(-int(1.2 * longest) // 16) * 16
    if model_block_size and block_size not in (0, model_block_size):
        raise ValueError(f"--block_size={block_size} cannot apply: the loaded model's is {model_block_size}")
    need = prompt + max(max_new_tokens, longest + 8 if pretrains else 0)
    block_size = model_block_size or block_size or -(-need // 64) * 64
    errors = []
    if max_new_tokens < shortest:
        errors.append(f"--max_new_tokens={max_new_tokens} is shorter than the teacher's shortest response "
                      f"({shortest} tokens with EOS): every response would be cut off and earn 0")
    if prompt + max_new_tokens > block_size:
        errors.append(f"the longest prompt ({prompt} tokens) + --max_new_tokens={max_new_tokens} exceeds the block "
                      f"size {block_size}")
    if pretrains and prompt + longest + 8 > block_size:
        errors.append(f"the longest prompt ({prompt} tokens) + the teacher's longest demonstration ({longest}) + 8 "
                      f"tokens of margin exceed the block size {block_size}: raise --block_size, or leave it 0")
    if errors:
        raise ValueError("\nerror: ".join(errors))
    if max_new_tokens < longest:
        print(f"note: --max_new_tokens={max_new_tokens} is shorter than the teacher's longest demonstration "
              f"({longest} tokens): responses that long are truncated and earn nothing")
    return max_new_tokens, block_size


if __name__ == "__main__":
    rng = random.Random(0)
    for family in FAMILIES:
        for p in generate_problems(2, seed=1, families=(family,), digits={"mul": 2, "poly": 1}.get(family, 3)):
            print(f"--- {family} ---\n{p.prompt}{response(p.solution, p.answer)}<|endoftext|>")
        p = generate_problems(1, seed=2, families=(family,))[0]
        print(f"--- {family}, with a teacher's mistake ---")
        print(p.prompt + demonstration(p, rng, think_prob=1.0, error_prob=1.0)[0] + "<|endoftext|>")
    problems = generate_problems(2000, seed=0)
    demos = [demonstration(p, rng, think_prob=0.3, error_prob=0.3) for p in problems]
    print(f"\ncorpus with think_prob=0.3, error_prob=0.3: accuracy {sum(d[1] for d in demos) / len(demos):.3f}, "
          f"think share {sum(d[2] for d in demos) / len(demos):.3f}")
