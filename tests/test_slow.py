"""The acceptance run: the default CPU preset end to end (about 2.5 minutes on 2 cores), the whole story checked.
python -m pytest -m slow"""
import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_default_cpu_run_tells_the_whole_story(tmp_path):
    """Pretraining stays below its teacher, answering mostly directly; RL ends >= 0.90 held-out and >= 20 points
    above the teacher, with the think share up from below one half to above 0.9."""
    r = subprocess.run([sys.executable, "train.py", "--device=cpu", "--preset=cpu", f"--out_dir={tmp_path}"],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["pretrain_acc"] < s["corpus_acc"], s
    assert s["rl_acc"] >= 0.9 and s["rl_acc"] >= s["corpus_acc"] + 0.2, s
    assert s["think_share_before"] < 0.5 < 0.9 < s["think_share_after"], s
