"""
homework.py: turn this repository into a homework starter, with the test suite as its autograder.

    python homework.py --out DIR [--only sample.draw,grpo.grpo_loss] [--solutions]

writes a plain copy of the repository (no .git, no caches, no outputs) in which each chosen function keeps its
signature and docstring and its body becomes `raise NotImplementedError("homework: module.name ...")`. The
functions are found with `ast` in the source as it is: nothing in the code a student reads marks them. The copy
also gets HOMEWORK.md (in reading order: what each blank must do, the equation, the command that grades it),
homework.json (the same, for the autograder) and conftest.py, which makes `python -m pytest` end with one line per
blank: PASS, TODO (not implemented), FAIL (implemented, but a grading test fails) or BLOCKED (a grading test
cannot run until another blank is done). `--solutions` writes the same starter without blanking anything: the
reference an instructor grades against.
"""
import argparse
import ast
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# The default set, in reading order: (module, function, the equation it implements, the tests that grade it).
FUNCTIONS = [
    ("sample", "draw", "token i with cdf[i-1] <= u * cdf[V-1] < cdf[i], cdf = cumsum softmax(z / tau); argmax at "
     "tau = 0", ["tests/test_sample.py"]),
    ("sample", "decode_step", "logits(y_t | K, V[..., :start + 1]): one token per row, its keys and values "
     "written to the cache at slot start", ["tests/test_sample.py"]),
    ("verify", "_literal", "'12', '-0.5', '.5', '7/2', '\\frac{7}{2}' -> an exact Fraction; anything else -> None",
     ["tests/test_verify.py"]),
    ("advantage", "group_advantages", "A_i = (r_i - mu) / sqrt(var + eps) (grpo), r_i - mu (drgrpo), "
     "r_i - mean_{j != i} r_j (rloo), r_i (none); 0 for a group whose rewards are all equal",
     ["tests/test_advantage.py"]),
    ("grpo", "token_logprobs", "log pi(y) = z_y - log sum_v exp(z_v), z = h W^T / tau", ["tests/test_grpo.py"]),
    ("grpo", "kl_estimate", "u = ref_logprobs - logprobs: k1 = -u, k2 = u^2 / 2, k3 = e^u - u - 1",
     ["tests/test_grpo.py"]),
    ("grpo", "grpo_loss", "l_t = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A) + kl_coef k_t, "
     "rho = exp(logprobs - old_logprobs); loss = sum_it w_it mask_it l_it", ["tests/test_grpo.py"]),
    ("train", "grpo_update", "mu passes: sum over micro-batches of grad grpo_loss, clip the norm, AdamW step; "
     "skip a pass whose loss or gradient is not finite",
     ["tests/test_train.py::test_planted_reward_moves_the_policy",
      "tests/test_train.py::test_later_passes_report_what_the_clip_did",
      "tests/test_train.py::test_a_non_finite_update_is_skipped_and_leaves_the_weights_untouched"]),
]
SKIP = {"__pycache__", "homework.py", "test_homework.py"}  # and hidden files and folders (.git, .venv, caches),
# and top-level out*; the generator and its own test are the instructor's, not the student's


def body_lines(source, name):
    """(first, last) 1-based lines of a top-level function's body after its docstring, and its indentation."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            doc = node.body[0]
            if not (isinstance(doc, ast.Expr) and isinstance(getattr(doc, "value", None), ast.Constant)
                    and isinstance(doc.value.value, str)):
                raise ValueError(f"{name} has no docstring: a blank needs one to say what it must do")
            if len(node.body) < 2:
                raise ValueError(f"{name} has nothing but a docstring")
            return doc.end_lineno + 1, node.end_lineno, " " * node.body[1].col_offset, ast.get_docstring(node)
    raise ValueError(f"no top-level function {name!r}")


def blank(source, module, name):
    """The source with `name`'s body (everything after its docstring, comments included) replaced by a raise."""
    first, last, indent, _ = body_lines(source, name)
    lines = source.splitlines(keepends=True)
    stub = f'{indent}raise NotImplementedError("homework: {module}.{name} is yours to write: see HOMEWORK.md")\n'
    return "".join(lines[:first - 1] + [stub] + lines[last:])


def copy_tree(out):
    """A plain copy of the repository's files: no .git, caches, outputs or this script."""
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if any(part in SKIP or part.startswith(".") for part in rel.parts) or rel.parts[0].startswith("out"):
            continue
        if path.is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out / rel)


def homework_md(chosen):
    parts = ["# Homework\n", "Fill in each function below, in this order (the repository's reading order). Each one",
             "keeps its signature and docstring; its body raises `NotImplementedError` until you write it.",
             "`python -m pytest` grades them all and ends with one line per function. One function's tests may be",
             "BLOCKED until an earlier one is done.\n"]
    for i, (module, name, equation, graders) in enumerate(chosen, 1):
        doc = body_lines((ROOT / f"{module}.py").read_text(), name)[3]
        parts += [f"## {i}. `{module}.{name}` ({module}.py)\n", doc.strip() + "\n", f"Equation: `{equation}`\n",
                  "Graded by: " + ", ".join(f"`python -m pytest {g}`" for g in graders) + "\n"]
    return "\n".join(parts)


CONFTEST = '''"""The autograder's summary: one line per homework function (homework.json lists them and their tests)."""
import json
import re
from pathlib import Path

HOMEWORK = json.loads((Path(__file__).parent / "homework.json").read_text())
NAMED = re.compile(r"homework: (\\w+\\.\\w+) is yours to write")
RESULTS = {}  # test id -> (passed, the homework functions its failure names)


def pytest_runtest_logreport(report):  # a skipped test counts neither way
    if report.failed:
        RESULTS[report.nodeid] = (False, sorted(set(NAMED.findall(str(report.longrepr)))))
    elif report.when == "call" and report.passed and report.nodeid not in RESULTS:
        RESULTS[report.nodeid] = (True, [])


def pytest_collectreport(report):  # a test file that cannot even be imported
    if report.failed:
        RESULTS[report.nodeid] = (False, sorted(set(NAMED.findall(str(report.longrepr)))))


def status(name, graders):
    ran = {t: r for t, r in RESULTS.items() if any(t == g or t.startswith(g + "::") or t.startswith(g + "[")
                                                   for g in graders)}
    failed = {t: names for t, (ok, names) in ran.items() if not ok}
    if not ran:
        return "NOT RUN", "none of its tests ran"
    if not failed:
        return "PASS", f"{len(ran)} tests"
    if any(name in names for names in failed.values()):
        return "TODO", f"{len(failed)} of {len(ran)} tests fail: not implemented yet"
    others = sorted({n for names in failed.values() for n in names})
    if others and all(names for names in failed.values()):
        return "BLOCKED", "by " + ", ".join(others)
    return "FAIL", f"{len(failed)} of {len(ran)} tests fail, e.g. {next(iter(failed))}"


def pytest_terminal_summary(terminalreporter):
    lines = []
    for f in HOMEWORK["functions"]:
        verdict, why = status(f["name"], f["graders"])
        lines.append(f"  {f['name']:<28s} {verdict:<8s} {why}")
        f["verdict"] = verdict
    terminalreporter.write_sep("=", "homework: one line per function (HOMEWORK.md says what each must do)")
    terminalreporter.write_line("\\n".join(lines))
    (Path(__file__).parent / ".homework_results.json").write_text(json.dumps(
        dict(functions=HOMEWORK["functions"], tests={t: dict(passed=ok, names=n) for t, (ok, n) in RESULTS.items()})))
'''


def make_starter(out, only=None, solutions=False):
    """Write the starter into out (which must not exist yet). only: names like 'grpo.grpo_loss' (default: all)."""
    names = [f"{m}.{n}" for m, n, _, _ in FUNCTIONS]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ValueError(f"unknown homework functions {unknown}; choose from {names}")
    chosen = [f for f in FUNCTIONS if only is None or f"{f[0]}.{f[1]}" in only]
    out = Path(out)
    if out.exists():
        raise ValueError(f"{out} exists already: the starter goes into a new folder")
    out.mkdir(parents=True)
    copy_tree(out)
    if not solutions:
        for module, name, _, _ in chosen:
            path = out / f"{module}.py"
            path.write_text(blank(path.read_text(), module, name))
    (out / "HOMEWORK.md").write_text(homework_md(chosen))
    (out / "homework.json").write_text(json.dumps(dict(functions=[
        dict(name=f"{m}.{n}", equation=e, graders=g) for m, n, e, g in chosen]), indent=1))
    (out / "conftest.py").write_text(CONFTEST)
    return chosen


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="write a homework starter of this repository")
    p.add_argument("--out", required=True, help="a new folder for the starter")
    p.add_argument("--only", default=None, help="comma-separated functions, e.g. sample.draw,grpo.grpo_loss")
    p.add_argument("--solutions", action="store_true", help="blank nothing: the reference, with the autograder")
    a = p.parse_args()
    try:
        chosen = make_starter(a.out, a.only.split(",") if a.only else None, a.solutions)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {a.out}: {len(chosen)} functions {'kept (solutions)' if a.solutions else 'blanked'}, "
          f"HOMEWORK.md, conftest.py; grade with: cd {os.path.relpath(a.out)} && python -m pytest")
