"""homework.py: every blank of the default set is graded (blanked alone, at least one of its tests fails, and
nothing of its tests fails that does not name it), the all-blank starter imports and fails only where a blank is
named, the solutions pass, and no blanked body survives in the starter. The starters run their tests two at a
time: each blank's own (eight starters: `-m slow`), or for the all-blank starter and the solutions a fast subset
of the suite."""
import ast
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import homework

FAST = ["tests/test_sample.py", "tests/test_verify.py", "tests/test_advantage.py", "tests/test_grpo.py"] + [
    f"tests/test_train.py::{t}" for t in (
        "test_planted_reward_moves_the_policy", "test_later_passes_report_what_the_clip_did",
        "test_a_non_finite_update_is_skipped_and_leaves_the_weights_untouched",
        "test_the_rl_knobs_each_change_what_they_should",
        "test_grade_samples_strips_eos_and_never_credits_a_truncated_answer",
        "test_pretrain_step_sets_the_lr_clips_the_gradient_and_lowers_the_loss")]
NAMES = [f"{m}.{n}" for m, n, _, _ in homework.FUNCTIONS]


def grade(starter, tests):
    """Run tests in a starter; returns (pytest's output, the autograder's results)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}  # two starters share 2 cores
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=starter,
                       capture_output=True, text=True, timeout=300, env=env)
    return r.stdout, json.loads((Path(starter) / ".homework_results.json").read_text())


def build_and_grade(base, jobs):
    """Make each job's starter under base and run its tests, two starters at a time: {key: grade(...)}."""
    for key, (kw, _) in jobs.items():
        homework.make_starter(base / key.replace(".", "_"), **kw)
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(jobs, pool.map(lambda k: grade(base / k.replace(".", "_"), jobs[k][1]), jobs)))


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Two starters, both graded by the fast subset: all blanks blank, and the solutions."""
    base = tmp_path_factory.mktemp("homework")
    return base, build_and_grade(base, {"all": (dict(only=None), FAST),
                                        "solutions": (dict(only=None, solutions=True), FAST)})


@pytest.fixture(scope="module")
def graded_alone(tmp_path_factory):
    """One starter per blank, graded by its own tests (whatever else it breaks, the all-blank starter's run shows,
    since every failure there must name a blank)."""
    base = tmp_path_factory.mktemp("homework_alone")
    return base, build_and_grade(base, {f"{m}.{n}": (dict(only=[f"{m}.{n}"]), graders)
                                        for m, n, _, graders in homework.FUNCTIONS})


@pytest.mark.slow  # eight starters, ~50 s; the all-blank starter below checks every failure names a blank
@pytest.mark.parametrize("name", NAMES)
def test_each_blank_alone_is_graded_and_breaks_nothing_else(graded_alone, name):
    out, res = graded_alone[1][name]
    failed = {t: r["names"] for t, r in res["tests"].items() if not r["passed"]}
    graders = next(f["graders"] for f in res["functions"] if f["name"] == name)
    assert any(t.startswith(tuple(graders)) for t in failed), f"{name} blanked, yet none of its tests fail"
    unrelated = [t for t, names in failed.items() if names != [name]]
    assert not unrelated, f"{name} blanked: these fail without naming it: {unrelated[:5]}"
    assert next(f["verdict"] for f in res["functions"] if f["name"] == name) == "TODO"
    assert f"{name:<28s} TODO" in out  # the summary a student sees


def test_the_all_blank_starter_imports_and_fails_only_where_a_blank_is_named(graded):
    base, results = graded
    r = subprocess.run([sys.executable, "-c", "import model, sample, verify, evaluation, advantage, grpo, ddp, "
                        "checkpoint, config, train, plot"], cwd=base / "all", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out, res = results["all"]
    failed = {t: r["names"] for t, r in res["tests"].items() if not r["passed"]}
    assert failed and all(failed.values()), [t for t, n in failed.items() if not n][:5]
    assert {f["verdict"] for f in res["functions"]} <= {"TODO", "BLOCKED"}
    assert "homework: one line per function" in out


def test_the_starter_collects_its_whole_suite(graded):
    """A bare `python -m pytest` in the starter must reach every test file: none may import what was left out."""
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                       cwd=graded[0] / "all", capture_output=True, text=True, timeout=120)
    summary = r.stdout.strip().splitlines()[-1]  # "N tests collected in ...", with "M errors" if any
    assert r.returncode == 0 and "collected" in summary and "error" not in summary, r.stdout[-2000:]
    assert not (graded[0] / "all" / "tests" / "test_homework.py").exists()


def test_the_solutions_pass_every_grading_test(graded):
    out, res = graded[1]["solutions"]
    assert all(r["passed"] for r in res["tests"].values()), out[-3000:]
    assert [f["verdict"] for f in res["functions"]] == ["PASS"] * len(NAMES)


def solution_lines(root):
    """Lines of the default set's bodies that appear nowhere else in the repository: the solutions proper."""
    bodies, elsewhere = set(), set()
    for module in {m for m, _, _, _ in homework.FUNCTIONS}:
        source = (root / f"{module}.py").read_text()
        lines = source.splitlines()
        inside = set()
        for m, n, _, _ in homework.FUNCTIONS:
            if m == module:
                first, last, _, _ = homework.body_lines(source, n)
                inside |= set(range(first - 1, last))
        bodies |= {lines[i].strip() for i in inside if len(lines[i].strip()) > 12}
        elsewhere |= {line.strip() for i, line in enumerate(lines) if i not in inside}
    for path in root.rglob("*.py"):
        if path.stem not in {m for m, _, _, _ in homework.FUNCTIONS} or path.parent != root:
            elsewhere |= {line.strip() for line in path.read_text().splitlines()}
    return bodies - elsewhere


def test_no_blanked_body_survives_in_the_starter(tmp_path):
    base = tmp_path / "starter"
    homework.make_starter(base)
    secret = solution_lines(homework.ROOT)
    assert len(secret) > 40  # the check has something to look for
    for path in base.rglob("*"):
        parts = path.relative_to(base).parts
        assert not any(p.startswith(".") or p == "__pycache__" for p in parts), path  # no .git, no caches
        if path.suffix in (".py", ".md", ".json", ".txt", ".ini"):
            leaked = secret & {line.strip() for line in path.read_text().splitlines()}
            assert not leaked, (path, sorted(leaked)[:3])
    for name in NAMES:  # every blank still has its signature and docstring, and raises
        module, fn = name.split(".")
        tree = ast.parse((base / f"{module}.py").read_text())
        node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == fn)
        assert ast.get_docstring(node) and isinstance(node.body[1], ast.Raise) and len(node.body) == 2


def test_homework_md_lists_each_blank_in_reading_order_with_its_command(graded):
    text = (graded[0] / "all" / "HOMEWORK.md").read_text()
    positions = [text.index(f"`{name}`") for name in NAMES]
    assert positions == sorted(positions)
    assert text.count("Graded by: `python -m pytest tests/") == len(NAMES) and text.count("Equation:") == len(NAMES)


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown homework functions"):
        homework.make_starter(tmp_path / "a", only=["grpo.nothing"])
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match="exists already"):
        homework.make_starter(tmp_path / "b")
