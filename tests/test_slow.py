"""The acceptance run: the default CPU preset end to end (about 3.5 minutes on 2 cores). python -m pytest -m slow"""
import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_default_cpu_run_beats_its_teacher_and_learns_to_think(tmp_path):
    r = subprocess.run([sys.executable, "train.py", "--device=cpu", "--preset=cpu", f"--out_dir={tmp_path}"],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["rl_acc"] >= 0.9 and s["rl_acc"] >= s["corpus_acc"] + 0.2, s
    assert s["think_share_after"] > s["think_share_before"] + 0.3, s
