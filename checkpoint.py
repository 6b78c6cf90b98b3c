"""
checkpoint.py: what makes a run stoppable and resumable exactly. Plumbing, not a concept: read it next to train.py.

- The run state besides the weights and the optimizer (`new_run`): counters, timings, the curriculum's success
  rates and the two random generators that every draw after the model's init goes through, so that a resumed run
  continues exactly as if it had never stopped.
- `save_checkpoint` writes atomically (temp file, then rename): a crash mid-save never destroys the previous
  checkpoint, and a failed write (a full disk) stops the run naming the cause.
- `truncate_log` drops, on resume, the metrics a killed run wrote after its last checkpoint, so that
  metrics.jsonl holds each step once; `write_record` writes one flushed JSON line, with null for NaN.
- Ctrl-C (SIGINT) and a scheduler's SIGTERM ask the run to stop at the end of the current step (`request_stop`);
  train.py then saves and exits. A second signal quits at once.
"""
import json
import math
import os
import random
import shutil
import signal
import sys

import torch

import ddp

def claim_out_dir(out_dir, resume, overwrite, rank=0):
    """The paths of the checkpoint and the metrics in out_dir, made if need be. A new run refuses a folder that
    holds another run's files, unless overwrite: then it deletes them and says so. Only rank 0 writes (ddp.py)."""
    paths = os.path.join(out_dir, "ckpt.pt"), os.path.join(out_dir, "metrics.jsonl")
    if rank:
        return paths
    os.makedirs(out_dir, exist_ok=True)
    if not resume and any(os.path.exists(p) for p in paths):
        if not overwrite:
            sys.exit(f"error: {out_dir} holds another run; continue it with --init_from=resume, start afresh "
                     "with --overwrite=true, or choose another --out_dir")
        print(f"--overwrite: starting afresh in {out_dir} (its ckpt.pt and metrics.jsonl are replaced)")
        for p in paths:
            if os.path.exists(p):
                os.remove(p)
    return paths


def new_run(seed, pool_size):
    """The training state besides the weights and the optimizer: counters, timings, random generators."""
    return dict(stage="pretrain", step=0, rl_step=0, skipped=0, pretrain_eval=None, pretrain_s=0.0, rl_s=0.0,
                wall_s=0.0, success=torch.full((pool_size,), 0.5),  # each RL prompt's running success rate
                data_rng=random.Random(seed), sample_gen=torch.Generator().manual_seed(seed + 3))


def save_checkpoint(path, model, optimizer, ref_model, cfg, run):
    """Everything a resumed run needs to continue exactly as if it had never stopped: all randomness after the
    model's init flows through run's two generators. Atomic: write a temp file then rename, so a crash mid-save
    never destroys the previous checkpoint; a failed write (a full disk) stops the run with the cause. Under
    torchrun only rank 0 writes: every rank holds the same state."""
    if ddp.world_size() > 1 and torch.distributed.get_rank() != 0:
        return
    state = dict(run, data_rng=run["data_rng"].getstate(), sample_gen=run["sample_gen"].get_state(),
                 model=model.state_dict(), model_config=vars(model.config).copy(),
                 config=vars(cfg).copy(), optimizer=optimizer.state_dict(),
                 ref_model=ref_model.state_dict() if ref_model else None)
    try:
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError from its zip writer
        if os.path.exists(path + ".tmp"):
            os.remove(path + ".tmp")
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 2 ** 20
        sys.exit(f"error: could not write the checkpoint {path}: {free:.1f} MiB free on its disk "
                 f"({str(e).splitlines()[0]}). The previous checkpoint, if any, is intact.")


def load_checkpoint(path):
    """The dict a save_checkpoint wrote, or a message naming what is wrong with the file."""
    if not os.path.isfile(path):
        sys.exit(f"error: no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        missing = {"model", "model_config", "config", "optimizer", "stage"} - set(ckpt)
    except Exception as e:  # a truncated file, or not a torch file at all
        sys.exit(f"error: {path} is not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})")
    if missing:
        sys.exit(f"error: {path} is not a checkpoint of train.py (it lacks {sorted(missing)})")
    return ckpt


def restore_run(ckpt, seed, pool_size):
    """The run state saved in a checkpoint, as new_run makes it (fields a checkpoint lacks keep new_run's)."""
    run = new_run(seed, pool_size)
    run.update({k: ckpt[k] for k in run if k in ckpt and k not in ("data_rng", "sample_gen")})
    run["data_rng"].setstate(ckpt["data_rng"])
    run["sample_gen"].set_state(ckpt["sample_gen"])
    return run


def truncate_log(path, run):
    """On resume: drop the records written after the checkpoint (a run killed after its last save wrote them,
    and the resumed run writes those steps again), a half-written last line, and old summaries."""
    if not os.path.exists(path):
        return
    keep = []
    for line in open(path):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("stage") in ("pretrain", "pretrain_eval"):
            seen = run["stage"] == "rl" or rec["step"] <= run["step"]
        elif rec.get("stage") in ("rl", "rl_eval"):
            seen = run["stage"] == "rl" and rec["rl_step"] <= run["rl_step"]
        else:
            seen = False
        if seen:
            keep.append(line if line.endswith("\n") else line + "\n")
    with open(path + ".tmp", "w") as f:
        f.writelines(keep)
    os.replace(path + ".tmp", path)


def write_record(f, record):
    """One JSON line, flushed; a float that is not finite is written as null (NaN is not JSON)."""
    clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
    try:
        f.write(json.dumps(clean) + "\n")
        f.flush()
    except OSError as e:
        sys.exit(f"error: could not write {f.name}: {e}")


STOP = []  # the signal that asked the run to stop; it stops at the end of the current step


def request_stop(signum, frame):
    if STOP:  # asked twice: stop now, without a checkpoint
        raise KeyboardInterrupt
    STOP.append(signal.Signals(signum).name)
    print(f"\n{STOP[0]}: stopping at the end of this step (again to quit at once, without saving)")
