"""
bench/verify.py: what one grade costs, on the worst text we can think of. The reward runs on every sampled
response, so a grade must stay cheap whatever the policy writes; verify.py's caps are what make it so, and this
measures them.

Times every case of tests/test_verify.py (numbers and polynomials, the hostile ones included: power towers,
9**9**9, deep nesting, huge coefficients, (x+1)^10^10, many factors, unknown names, look-alike characters) and
a seeded fuzzer over both grammars' characters and junk, each grade alone, with check_form on and off. Prints,
for number truths and polynomial truths apart, the mean and the worst time per grade (the worst single call, and
the worst of each input's best of 3 calls, which filters scheduler noise), the slowest input, and the number of
exceptions, which must be 0 (the exit status says whether it was).

Run: `python bench/verify.py` (about 5 seconds on one core); `--fuzz N` sets the number of fuzzed responses.
"""
import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.test_verify import A, CASES, EXPRESSION_ATOMS, EXPRESSION_TRUTHS, mutated, random_text  # noqa: E402
from verify import grade  # noqa: E402

NUMBER_TRUTHS = ["0", "5", "-38", "7/2", "-3/4", "132"]


def corpus(n_fuzz, seed=0):
    """(response, truth) pairs: the tests' table, then n_fuzz fuzzed responses, a third against number truths."""
    rng = random.Random(seed)
    pairs = [(response, truth) for response, truth, _ in CASES]
    for i in range(n_fuzz):
        if i % 3 == 0:  # the number fuzzer's text: tags, digits, operators and junk in any order
            pairs.append((random_text(rng), rng.choice(NUMBER_TRUTHS)))
        else:
            truth = rng.choice(EXPRESSION_TRUTHS)
            answer = random_text(rng, 16, EXPRESSION_ATOMS) if i % 3 == 1 else mutated(truth, rng)
            pairs.append((A(answer), truth))
    return pairs


def timed(response, truth, check_form):
    """(seconds, whether grade raised) for one call."""
    t0 = time.perf_counter()
    try:
        grade(response, truth, check_form=check_form)
        raised = False
    except Exception:  # what we count: the reward must never raise on model text
        raised = True
    return time.perf_counter() - t0, raised


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuzz", type=int, default=12_000, help="fuzzed responses (the tests' cases come too)")
    args = parser.parse_args()
    pairs = corpus(args.fuzz)
    stats = {"numbers": [], "polynomials": []}  # (best of 3 s, worst of 3 s, response, truth, check_form)
    exceptions = 0
    for response, truth in pairs:
        kind = "polynomials" if "x" in truth else "numbers"
        for check_form in (True, False):
            runs = [timed(response, truth, check_form) for _ in range(3)]
            exceptions += sum(raised for _, raised in runs)
            times = [t for t, _ in runs]
            stats[kind].append((min(times), max(times), response, truth, check_form))
    print(f"verify.grade: {len(pairs)} responses ({len(CASES)} test cases, {args.fuzz} fuzzed) x check_form on/off "
          f"x 3 calls each")
    for kind, rows in stats.items():
        mean_ms = sum(best for best, *_ in rows) / len(rows) * 1e3
        worst_single_ms = max(worst for _, worst, *_ in rows) * 1e3
        best, _, response, truth, check_form = max(rows, key=lambda r: r[0])
        shown = repr(response) if len(response) <= 90 else repr(response[:70]) + f"...({len(response)} chars)"
        print(f"  {kind:<12} {len(rows):>6} grades  mean {mean_ms:.3f} ms  worst {best * 1e3:.3f} ms (best of 3), "
              f"{worst_single_ms:.3f} ms (any single call)")
        print(f"  {'':<12} slowest: {shown}  truth={truth} check_form={check_form}")
    print(f"  exceptions: {exceptions}")
    sys.exit(1 if exceptions else 0)


if __name__ == "__main__":
    main()
