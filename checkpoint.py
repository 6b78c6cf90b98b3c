"""
checkpoint.py: what makes a run stoppable and resumable exactly. Plumbing, not a concept: read it next to train.py.

- `start`: the model, the run state and the optimizer state a run begins with: from scratch, resumed from its
  own checkpoint, or from another run's weights. The run state besides the weights and the optimizer (`new_run`)
  holds counters, timings, the curriculum's success rates and the two random generators that every draw after
  the model's init goes through, so that a resumed run continues exactly as if it had never stopped.
- `save_checkpoint` writes atomically (temp file, then rename): a crash mid-save never destroys the previous
  checkpoint, and a failed write (a full disk) stops the run naming the cause.
- `truncate_log` drops, on resume, the metrics a killed run wrote after its last checkpoint, so that
  metrics.jsonl holds each step once; `write_record` writes one flushed JSON line, with null for NaN.
- Ctrl-C (SIGINT) and a scheduler's SIGTERM ask the run to stop at the end of the current step (`request_stop`);
  at the next step's start `stop_if_asked` saves and exits. A second signal quits at once.
"""
import json
import math
import os
import random
import shutil
import signal
import sys
import time

import torch

import ddp
from model import GPT, GPTConfig
from data.tokenizer import VOCAB_SIZE

def open_run_dir(cfg, run, rank=0):
    """The checkpoint's path in cfg.out_dir (made if need be) and a function that appends one record to its
    metrics.jsonl. A new run refuses a folder that holds another run's files, unless --overwrite: then it deletes
    them and says so. A resumed run first drops the records its killed predecessor wrote after its last
    checkpoint. Only rank 0 writes (ddp.py)."""
    ckpt_path, metrics_path = os.path.join(cfg.out_dir, "ckpt.pt"), os.path.join(cfg.out_dir, "metrics.jsonl")
    if rank:
        return ckpt_path, lambda record: None
    os.makedirs(cfg.out_dir, exist_ok=True)
    if cfg.init_from == "resume":
        truncate_log(metrics_path, run)
    elif any(os.path.exists(p) for p in (ckpt_path, metrics_path)):
        if not cfg.overwrite:
            sys.exit(f"error: {cfg.out_dir} holds another run; continue it with --init_from=resume, start afresh "
                     "with --overwrite=true, or choose another --out_dir")
        print(f"--overwrite: starting afresh in {cfg.out_dir} (its ckpt.pt and metrics.jsonl are replaced)")
        for p in (ckpt_path, metrics_path):
            if os.path.exists(p):
                os.remove(p)
    metrics = open(metrics_path, "a")
    return ckpt_path, lambda record: write_record(metrics, record)


def start(cfg, ckpt, pool_size):
    """What a run begins with: the model (initialised from cfg.seed), the run state, the optimizer state (None: a
    fresh optimizer) and the frozen reference's weights (None: the model's own, or no KL term). Three ways:
    ckpt None, from scratch (pretraining first); --init_from=resume, this run's own checkpoint, exactly where it
    stopped; a checkpoint path, another run's weights, from which a new RL stage starts (stage "rl_start")."""
    torch.manual_seed(cfg.seed)
    model = GPT(GPTConfig(**ckpt["model_config"]) if ckpt else GPTConfig(
        vocab_size=VOCAB_SIZE, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd))
    if ckpt is None:
        return model, new_run(cfg.seed, pool_size), None, None
    model.load_state_dict(ckpt["model"])
    if cfg.init_from != "resume":
        print(f"loaded the weights of {cfg.init_from}; RL starts from them")
        return model, dict(new_run(cfg.seed, pool_size), stage="rl_start"), None, None
    run = restore_run(ckpt, cfg.seed, pool_size)
    print(f"resumed {cfg.out_dir}: stage {run['stage']}, pretrain step {run['step']}, RL step {run['rl_step']}")
    if run["stage"] == "rl" and cfg.kl_coef > 0 and ckpt["ref_model"] is None:
        sys.exit("error: --kl_coef > 0, but the resumed run had no KL term: the policy it started from is lost")
    return model, run, ckpt["optimizer"], ckpt["ref_model"] if run["stage"] == "rl" else None


def new_run(seed, pool_size):
    """The training state besides the weights and the optimizer: counters, timings, random generators."""
    return dict(stage="pretrain", step=0, rl_step=0, skipped=0, pretrain_eval=None, pretrain_s=0.0, rl_s=0.0,
                wall_s=0.0, success=torch.full((pool_size,), 0.5),  # each RL prompt's running success rate
                lagged=[],  # --staleness: the weights of the last steps, oldest first (train.sampling_policy)
                kept=[],  # --filter_pool: the pool's prompts RL draws from (train.edge_of_ability; empty: all)
                data_rng=random.Random(seed), sample_gen=torch.Generator().manual_seed(seed + 3))


def save_checkpoint(path, model, optimizer, ref_model, cfg, run):
    """Everything a resumed run needs to continue exactly as if it had never stopped: all randomness after the
    model's init flows through run's two generators. Atomic: write a temp file then rename, so a crash mid-save
    never destroys the previous checkpoint; a failed write (a full disk) stops the run with the cause. Under
    torchrun only rank 0 writes: every rank holds the same state."""
    if ddp.world_size() > 1 and torch.distributed.get_rank() != 0:
        return
    state = dict({k: v for k, v in run.items() if k != "t0"}, wall_s=time.time() - run["t0"],  # seconds, all stages
                 data_rng=run["data_rng"].getstate(), sample_gen=run["sample_gen"].get_state(),
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


def stop_if_asked(path, model, optimizer, ref_model, cfg, run):
    """At a step's start: if a signal asked the run to stop (on any rank: every rank decides at the same step),
    save a checkpoint and exit."""
    if ddp.any_rank(STOP):
        save_checkpoint(path, model, optimizer, ref_model, cfg, run)
        ddp.finish()
        sys.exit(f"stopped by {STOP[0] if STOP else 'another rank'} in {run['stage']}: checkpoint saved to {path}; "
                 "continue with --init_from=resume")
