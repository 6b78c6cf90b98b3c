"""Faults: a run killed (SIGKILL), interrupted (SIGINT) or terminated (SIGTERM) at a random step, in RL or in
pretraining, resumes to exactly the weights and the metrics of a run that was never stopped; a full disk stops a
run with the cause named and the previous checkpoint intact. Tiny models; about a minute in all."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--batch_size=8", "--eval_problems=8", "--rl_pool=16",
        "--prompts_per_step=2", "--group_size=4", "--micro_batch=4", "--passk_problems=4", "--max_new_tokens=40",
        "--warmup_steps=1", "--device=cpu", "--preset=cpu", "--save_interval=3", "--rl_eval_interval=5"]
RL = ["--pretrain_steps=3", "--eval_interval=3", "--rl_steps=16"]
PRETRAIN = ["--pretrain_steps=40", "--eval_interval=20", "--rl_steps=2"]


def train(out, *args):
    return subprocess.run([sys.executable, "train.py", *TINY, f"--out_dir={out}", *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def records(out):
    return [json.loads(line) for line in open(out / "metrics.jsonl")]


def timeless(recs):
    return [{k: v for k, v in r.items() if not k.endswith("_s") and k != "time"} for r in recs]


def weights(out):
    return torch.load(out / "ckpt.pt", weights_only=False)["model"]


def stop_midway(out, args, sig, ready):
    """Start a run, wait until ready(metrics text) holds, send sig; return the process's stderr."""
    p = subprocess.Popen([sys.executable, "train.py", *TINY, f"--out_dir={out}", *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if (out / "metrics.jsonl").exists() and ready((out / "metrics.jsonl").read_text()):
            break
        time.sleep(0.01)
    p.send_signal(sig)
    return p.communicate(timeout=120)[1]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference runs, never stopped: one for RL faults, one for pretraining faults."""
    base = tmp_path_factory.mktemp("uninterrupted")
    for name, args in (("rl", RL), ("pretrain", PRETRAIN)):
        assert train(base / name, *args).returncode == 0
    return base


def assert_same_run(a, b):
    ra, rb = records(a), records(b)
    for stage, key in (("pretrain", "step"), ("rl", "rl_step"), ("rl_eval", "rl_step")):
        steps = [r[key] for r in rb if r["stage"] == stage]
        assert steps == sorted(set(steps)), f"{stage} steps logged twice or out of order: {steps}"
    assert timeless(ra[:-1]) == timeless(rb[:-1])  # every record but the summary, whose timings differ
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=pytest.mark.slow),
                                 pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])  # INT, TERM: test_train too
def test_a_signal_at_a_random_rl_step_then_resume_equals_the_uninterrupted_run(tmp_path, uninterrupted, sig):
    k = random.Random(int(sig)).randint(2, 10)  # the RL step after which the signal comes
    err = stop_midway(tmp_path, RL, sig, lambda text: f'"stage": "rl", "rl_step": {k},' in text)
    if sig != signal.SIGKILL:
        assert f"stopped by {sig.name}" in err and "checkpoint saved" in err and "Traceback" not in err, err[-1500:]
    assert (tmp_path / "ckpt.pt").exists() and torch.load(tmp_path / "ckpt.pt", weights_only=False)["rl_step"] < 16
    r = train(tmp_path, *RL, "--init_from=resume")
    assert r.returncode == 0, r.stderr[-1500:]
    assert_same_run(uninterrupted / "rl", tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_a_signal_during_pretraining_then_resume_equals_the_uninterrupted_run(tmp_path, uninterrupted, sig):
    ready = lambda text: (tmp_path / "ckpt.pt").exists()  # the first periodic save (step 3) has happened
    stop_midway(tmp_path, PRETRAIN, sig, ready)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert ckpt["stage"] == "pretrain" and ckpt["step"] < 40
    r = train(tmp_path, *PRETRAIN, "--init_from=resume")
    assert r.returncode == 0, r.stderr[-1500:]
    assert_same_run(uninterrupted / "pretrain", tmp_path)


def test_a_full_disk_names_the_cause_and_keeps_the_previous_checkpoint(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    # room for one checkpoint (~0.33 MB) and the start of its temp file, not for two
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=500k", "tmpfs", str(disk)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        out = disk / "out"
        r = train(out, *RL, "--save_interval=1")
        assert r.returncode != 0 and "could not write the checkpoint" in r.stderr and "MiB free" in r.stderr
        assert "Traceback" not in r.stderr, r.stderr[-1500:]
        assert not (out / "ckpt.pt.tmp").exists()
        ckpt = torch.load(out / "ckpt.pt", weights_only=False)  # the previous one, whole
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    finally:
        subprocess.run(["umount", str(disk)])


def test_metrics_are_strict_json_with_null_for_nan(tmp_path):
    from checkpoint import write_record
    with open(tmp_path / "m.jsonl", "w") as f:
        write_record(f, dict(len_correct=float("nan"), kl=float("inf"), reward=0.5, stage="rl"))
    line = (tmp_path / "m.jsonl").read_text()
    assert json.loads(line) == dict(len_correct=None, kl=None, reward=0.5, stage="rl") and "NaN" not in line


def test_stdout_arrives_line_by_line_through_a_pipe(tmp_path):
    """Redirected stdout used to be block-buffered: 24 RL steps, 0 lines in the log."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as a user's shell has it
    p = subprocess.Popen([sys.executable, "train.py", *TINY, f"--out_dir={tmp_path}", *RL, "--rl_steps=10000"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
    try:
        for line in p.stdout:  # each line as it is printed, while the run goes on
            if line.startswith("rl    1 |"):
                break
        logged = records(tmp_path)
        assert p.poll() is None, "the run ended before its first RL line arrived"
        assert sum(r["stage"] == "rl" for r in logged) <= 3, "the first RL line came long after its step"
    finally:
        p.kill()
        p.wait()


def test_timings_are_carried_across_a_resume(tmp_path):
    ckpt = lambda: torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert train(tmp_path, *RL[:2], "--rl_steps=2").returncode == 0
    first = ckpt()
    assert train(tmp_path, *RL[:2], "--rl_steps=4", "--init_from=resume").returncode == 0
    second = ckpt()  # the unrounded totals: the summary's are rounded to 0.1 s
    assert second["wall_s"] > first["wall_s"] and second["rl_s"] > first["rl_s"] > 0
    assert second["pretrain_s"] == first["pretrain_s"]  # pretraining was not redone
    assert records(tmp_path)[-1]["wall_s"] >= round(first["wall_s"], 1)
