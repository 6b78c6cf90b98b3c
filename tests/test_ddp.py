"""ddp.py under torchrun: two CPU processes (gloo) give the weights and the metrics of one process on the union of
their batches, for pretraining and for RL under every loss aggregation, resume included; configurations that do
not split are refused; one rank's failure ends the run instead of hanging it. About a minute."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grpo import LOSS_AGGS

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--batch_size=8", "--eval_problems=8", "--rl_pool=32",
         "--prompts_per_step=4", "--group_size=4", "--micro_batch=8", "--passk_problems=4", "--max_new_tokens=48",
         "--warmup_steps=5", "--device=cpu", "--preset=cpu", "--threads=1", "--save_interval=100"]


def one_process(out, *args):
    return subprocess.run([sys.executable, "train.py", *SMALL, f"--out_dir={out}", *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def two_processes(out, *args, script="train.py"):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, *SMALL,
           f"--out_dir={out}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)


INFRA = ("exitcode  : -", "Address already in use", "EADDRINUSE", "RendezvousError", "terminate called")


def two_processes_ok(out, *args):
    """A run that must succeed. A launch that died of the launcher rather than of train.py (a worker killed by a
    signal, a port taken by another process, a failed rendezvous) is tried once more, since it says nothing about
    the code under test: a new run from scratch, a resume from its checkpoint (which a failed launch leaves as it
    was, and whose extra metrics the resume drops). Any other failure is returned as it is."""
    r = two_processes(out, *args)
    if r.returncode and any(sign in r.stderr for sign in INFRA):
        print(f"torchrun launch failed outside train.py, retried once:\n{r.stderr[-1500:]}")
        if "--init_from=resume" not in args:
            shutil.rmtree(out, ignore_errors=True)
        r = two_processes(out, *args)
    return r


def assert_same(a, b, keys, stages=None):
    """The same weights (to float rounding) and the same logged records (of these stages), step by step."""
    wa, wb = (torch.load(d / "ckpt.pt", weights_only=False)["model"] for d in (a, b))
    C = wa["transformer.wte.weight"].shape[1]
    for k in wa:
        # the same tensors, to float rounding: one process sorts all its rows by length into micro-batches, each
        # rank only its own, so the gradients add up in another order (up to 1.6e-6 measured after 3 steps)
        diff = (wa[k] - wb[k]).abs()
        if k.endswith("attn.c_attn.bias"):
            # The key bias adds the same q.b to every score of a row, which the softmax cancels: its gradient is 0
            # in exact arithmetic, and AdamW (dividing by sqrt(v)) turns rounding noise into steps of up to lr.
            assert diff[C:2 * C].max() < 1e-3
            diff = torch.cat([diff[:C], diff[2 * C:]])
        assert diff.max() < 1e-5, (k, diff.max().item())
    ra, rb = ([r for r in map(json.loads, open(d / "metrics.jsonl")) if stages is None or r["stage"] in stages]
              for d in (a, b))
    assert [r["stage"] for r in ra] == [r["stage"] for r in rb]
    for x, y in zip(ra, rb):
        for k in keys:
            if k in x:
                assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-6), (x["stage"], k, x[k], y[k])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A checkpoint whose samples are sometimes well formatted, so that a format bonus gives the RL steps a signal
    (an untrained model's rewards are all 0, and nothing would move)."""
    out = tmp_path_factory.mktemp("pretrained")
    r = one_process(out, "--pretrain_steps=60", "--eval_interval=60", "--rl_steps=0", "--lr=1e-2")
    assert r.returncode == 0, r.stderr[-2000:]
    return out / "ckpt.pt"


def test_pretraining_splits_its_batch_exactly(tmp_path):
    args = ["--pretrain_steps=6", "--eval_interval=3", "--rl_steps=0"]
    r1, r2 = one_process(tmp_path / "one", *args), two_processes_ok(tmp_path / "two", *args)
    assert r1.returncode == 0 and r2.returncode == 0, r2.stderr[-3000:]
    assert "torchrun: 2 processes, backend gloo" in r2.stdout
    assert_same(tmp_path / "one", tmp_path / "two", ["loss", "acc", "think_share", "response_len"])


RL_KEYS = ["reward", "format_rate", "zero_signal", "response_len", "think_share", "truncated", "loss",
           "kl", "entropy", "clip_frac", "grad_norm", "acc", "pass@1"]


@pytest.mark.parametrize("agg", [a if a == "seq-mean-token-mean" else pytest.param(a, marks=pytest.mark.slow)
                                 for a in LOSS_AGGS])  # the default in the default suite, the rest with -m slow
def test_rl_steps_equal_one_process_for_each_loss_aggregation(tmp_path, pretrained, agg):
    args = [f"--init_from={pretrained}", "--rl_steps=2", "--format_bonus=0.5", f"--loss_agg={agg}",
            "--rl_lr=3e-3", "--updates_per_batch=2", "--kl_coef=0.1"]
    r1, r2 = one_process(tmp_path / "one", *args), two_processes_ok(tmp_path / "two", *args)
    assert r1.returncode == 0 and r2.returncode == 0, r2.stderr[-3000:]
    rl = [json.loads(line) for line in open(tmp_path / "one" / "metrics.jsonl") if '"stage": "rl"' in line]
    assert len(rl) == 2 and rl[0]["grad_norm"] > 0 and 0 < rl[0]["reward"]  # the steps did learn something
    assert_same(tmp_path / "one", tmp_path / "two", RL_KEYS)


def test_resume_under_torchrun_equals_one_uninterrupted_process(tmp_path, pretrained):
    args = [f"--init_from={pretrained}", "--format_bonus=0.5", "--rl_lr=3e-3", "--curriculum=true"]
    assert one_process(tmp_path / "one", *args, "--rl_steps=3").returncode == 0
    assert two_processes_ok(tmp_path / "two", *args, "--rl_steps=1", "--save_interval=1").returncode == 0
    r = two_processes_ok(tmp_path / "two", "--init_from=resume", "--rl_steps=3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same(tmp_path / "one", tmp_path / "two", RL_KEYS, stages={"rl"})  # the first run's final eval is extra


def test_configurations_that_do_not_split_are_refused(tmp_path, monkeypatch):
    """The check reads torchrun's WORLD_SIZE before any process group exists, so it runs here, in one process."""
    import config
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as e:
        config.configure([*SMALL, f"--out_dir={tmp_path}", "--prompts_per_step=3", "--micro_batch=4", "--batch_size=7"])
    assert "--prompts_per_step=3 must divide by the 2 processes" in str(e.value)
    assert "--batch_size=7 must divide by the 2 processes" in str(e.value)


def test_a_non_finite_loss_on_one_rank_is_skipped_by_every_rank(tmp_path):
    """Rank 1's advantages turn NaN in the second step: the summed gradient is NaN on both ranks, so both skip
    that update, and with --max_bad_steps=1 both stop, instead of one waiting for the other."""
    script = tmp_path / "nan.py"
    script.write_text(f'''import os, sys
sys.path.insert(0, {str(ROOT)!r})
import train
real, calls = train.shaped_advantages, []
def shaped_advantages(*args, **kwargs):
    advantages = real(*args, **kwargs)
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 2:
        advantages = advantages * float("nan")
    return advantages
train.shaped_advantages = shaped_advantages
train.main(sys.argv[1:])
''')
    r = two_processes(tmp_path / "out", "--pretrain_steps=2", "--eval_interval=2", "--rl_steps=5",
                      "--max_bad_steps=1", script=str(script))
    assert r.returncode != 0 and "non-finite loss or gradient at RL step 2" in r.stdout, r.stderr[-2000:]
    assert r.stderr.count("1 non-finite updates in a row; stopping") == 2  # both ranks, at the same step


def test_one_rank_failing_ends_every_rank(tmp_path):
    """Rank 1 raises in its second RL step; rank 0 must not wait forever in the next collective."""
    script = tmp_path / "faulty.py"
    script.write_text(f'''import os, sys
sys.path.insert(0, {str(ROOT)!r})
import train
real, calls = train.grade_samples, []
def grade_samples(*args):
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 2:
        raise RuntimeError("rank 1 broke on purpose")
    return real(*args)
train.grade_samples = grade_samples
train.main(sys.argv[1:])
''')
    r = two_processes(tmp_path / "out", "--pretrain_steps=2", "--eval_interval=2", "--rl_steps=50",
                      script=str(script))
    assert r.returncode != 0 and "rank 1 broke on purpose" in r.stderr
