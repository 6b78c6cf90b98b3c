"""config.py: every bad value is refused before any work, with a message that names its field; the task decides
max_new_tokens and block_size when they are left at 0; devices, out_dir and checkpoints that cannot work."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import config
from data.tasks import FAMILIES

ROOT = Path(__file__).resolve().parent.parent


def refusal(overrides):
    """The message validate() stops with, or None when it accepts."""
    try:
        config.validate(config.make_config(overrides, "cpu"))
    except SystemExit as e:
        return str(e)
    return None


BAD = [  # (overrides, the text the message must contain)
    (dict(digits=0), "--digits=0 must be >= 1"), (dict(digits=-1), "--digits=-1"),
    (dict(think_prob=2.0), "--think_prob=2.0 must be in [0, 1]"), (dict(error_prob=-1.0), "--error_prob=-1.0"),
    (dict(echo_prob=0.1), "--echo_prob=0.1 applies to the poly family only"), (dict(echo_prob=2.0), "--echo_prob"),
    (dict(thinking="on"), "--thinking='on' must be one of"), (dict(think_budget=-2), "--think_budget=-2 must be >="),
    (dict(grad_clip=-1.0), "--grad_clip=-1.0 must be >= 0"), (dict(clip_eps=-1.0), "--clip_eps=-1.0"),
    (dict(clip_eps=1.0), "--clip_eps=1.0 must be in (0, 1)"), (dict(rl_lr=-1.0), "--rl_lr=-1.0 must be > 0"),
    (dict(lr=-1.0), "--lr=-1.0"), (dict(lr=float("nan")), "--lr=nan"), (dict(lr=float("inf")), "--lr=inf"),
    (dict(temperature=-1.0), "--temperature=-1.0 must be > 0"), (dict(temperature=0.0), "--temperature=0.0"),
    (dict(kl_coef=-1.0), "--kl_coef=-1.0 must be >= 0"), (dict(eval_problems=0), "--eval_problems=0"),
    (dict(eval_interval=0), "--eval_interval=0"), (dict(save_interval=0), "--save_interval=0"),
    (dict(rl_eval_interval=0), "--rl_eval_interval=0"), (dict(sample_interval=0), "--sample_interval=0"),
    (dict(log_interval=0), "--log_interval=0"), (dict(micro_batch=0), "--micro_batch=0 must be >= 1"),
    (dict(rl_pool=0), "--rl_pool=0"), (dict(n_head=3), "--n_embd=128 must be a multiple of --n_head=3"),
    (dict(n_layer=0), "--n_layer=0"), (dict(batch_size=0), "--batch_size=0"), (dict(group_size=0), "--group_size"),
    (dict(group_size=1), "--group_size must be >= 2"), (dict(updates_per_batch=0), "--updates_per_batch=0"),
    (dict(micro_batch=3), "--micro_batch=3 does not divide"), (dict(advantage="ppo"), "--advantage='ppo'"),
    (dict(loss_agg="sum"), "--loss_agg='sum'"), (dict(kl_kind="k4"), "--kl_kind='k4'"),
    (dict(families="add,div"), "--families='add,div'"), (dict(families="add,add"), "--families='add,add'"),
    (dict(passk_problems=500), "--passk_problems=500 must be <= --eval_problems=200"),
    (dict(max_bad_steps=0), "--max_bad_steps=0"), (dict(pretrain_steps=-1), "--pretrain_steps=-1"),
    (dict(rl_steps=-1), "--rl_steps=-1"), (dict(max_new_tokens=-5), "--max_new_tokens=-5"),
    (dict(format_bonus=-0.1), "--format_bonus=-0.1"), (dict(length_weight=-1.0), "--length_weight=-1.0"),
    (dict(init_from="nowhere.pt"), "--init_from='nowhere.pt' is neither"),
]


@pytest.mark.parametrize("overrides, message", BAD, ids=[next(iter(o)) + "=" + str(next(iter(o.values())))
                                                         for o, _ in BAD])
def test_each_bad_value_is_refused_naming_its_field(overrides, message):
    assert message in (refusal(overrides) or "accepted")


def test_the_defaults_and_both_presets_are_accepted():
    assert refusal({}) is None and refusal({"preset": "gpu"}) is None
    assert refusal({"group_size": 1, "advantage": "none", "micro_batch": 16}) is None  # REINFORCE needs no group


def test_every_numeric_field_has_a_rule():
    numeric = {f.name for f in config.dataclasses.fields(config.Config) if f.type in (int, float)} - {"seed"}
    assert numeric <= set(config.RULES)


def test_all_errors_are_reported_at_once():
    message = refusal(dict(digits=0, lr=-1.0, micro_batch=0))
    assert "--digits" in message and "--lr" in message and "--micro_batch" in message


def test_an_out_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    assert "is a file" in refusal({"out_dir": str(tmp_path / "f")})


@pytest.mark.parametrize("families, digits, new_tokens, block", [("add,sub", 2, 80, 128),
                                                                 ("add,sub,mul,lin", 3, 160, 192)])
def test_max_new_tokens_and_block_size_fit_the_task(families, digits, new_tokens, block):
    """Left at 0 they come from the task: the defaults' 80 / 128, and 160 / 192 for the gpu preset's mix, whose
    3-digit multiplications take 125 tokens (the old fixed 128 crashed in pretraining)."""
    import random
    from data.tasks import demonstration, fit_lengths, generate_problems
    from data.tokenizer import encode
    problems = generate_problems(2000, seed=0, families=families.split(","), digits=digits)
    rng = random.Random(0)
    longest = max(len(encode(demonstration(p, rng, 1.0, e)[0])) + 1 for p in problems for e in (0, 1))
    prompt = max(len(encode(p.prompt)) for p in problems)
    assert fit_lengths(0, 0, problems) == (new_tokens, block)
    assert prompt + longest <= block
    with pytest.raises(ValueError, match="teacher's longest demonstration"):
        fit_lengths(0, prompt + longest, problems)
    with pytest.raises(ValueError, match="exceeds the block size"):
        fit_lengths(block, 0, problems, block)
    with pytest.raises(ValueError, match="--block_size=256 cannot apply"):
        fit_lengths(0, 256, problems, block)


def train(*args, timeout=60):
    return subprocess.run([sys.executable, "train.py", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def main_refusal(*args):
    """The message train.main(args) stops with, in this process (a refusal comes before any work: no process of
    its own is worth its second of imports); None if it does not stop."""
    import train as train_module
    try:
        train_module.main(list(args))
    except SystemExit as e:
        return str(e)
    return None


SMALL = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--pretrain_steps=2", "--batch_size=4", "--eval_problems=8",
         "--rl_pool=8", "--prompts_per_step=2", "--group_size=2", "--micro_batch=4", "--passk_problems=2",
         "--eval_interval=2", "--rl_steps=1", "--device=cpu"]


@pytest.mark.parametrize("args, message", [
    (["--device=tpu"], "--device='tpu' is not a torch device"),
    (["--device=cuda"] if not torch.cuda.is_available() else ["--device=cuda:99"], "--device="),
    (["--digits=0"], "--digits=0 must be >= 1"),  # used to hang: a one-problem family never fills its split
    (["--digits=1", "--eval_problems=200"], "only 21 distinct test problems"),
    (["--lr=-1", "--micro_batch=0"], "--micro_batch=0 must be >= 1"),
])
def test_the_command_line_refuses_at_once_without_a_traceback(tmp_path, args, message):
    assert message in (main_refusal(*args, f"--out_dir={tmp_path / 'out'}") or "accepted")
    assert not (tmp_path / "out" / "ckpt.pt").exists()
    if args == ["--digits=0"]:  # and as a user sees it: the message, no traceback
        r = train(*args, f"--out_dir={tmp_path / 'out'}", timeout=30)
        assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]


def test_bad_checkpoints_and_model_flags_are_refused(tmp_path):
    assert train(*SMALL, f"--out_dir={tmp_path / 'a'}").returncode == 0
    ckpt = tmp_path / "a" / "ckpt.pt"
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    (tmp_path / "cut.pt").write_bytes(ckpt.read_bytes()[:5000])
    torch.save({"weights": 1}, tmp_path / "other.pt")
    for path, message in [("junk.pt", "is not a readable checkpoint"), ("cut.pt", "is not a readable checkpoint"),
                          ("other.pt", "is not a checkpoint of train.py")]:
        refused = main_refusal(*SMALL, f"--init_from={tmp_path / path}", f"--out_dir={tmp_path / 'b'}")
        assert message in (refused or ""), path
    assert "--n_layer=8 (the model has 1)" in main_refusal(*SMALL, f"--init_from={ckpt}", "--n_layer=8",
                                                     f"--out_dir={tmp_path / 'c'}")
    assert "--block_size=192 cannot apply: the loaded model's is 128" in main_refusal(
        *SMALL, f"--init_from={ckpt}", "--block_size=192", "--max_new_tokens=150", f"--out_dir={tmp_path / 'd'}")
    assert "exceeds the block size 128" in main_refusal(*SMALL, f"--init_from={ckpt}", "--max_new_tokens=150",
                                                   f"--out_dir={tmp_path / 'e'}")


def test_a_new_run_never_overwrites_an_old_one_unasked(tmp_path):
    out = tmp_path / "out"
    assert train(*SMALL, f"--out_dir={out}").returncode == 0
    before = (out / "metrics.jsonl").read_text()
    assert "holds another run" in main_refusal(*SMALL, f"--out_dir={out}")
    assert (out / "metrics.jsonl").read_text() == before
    r = train(*SMALL, f"--out_dir={out}", "--overwrite=true")
    assert r.returncode == 0 and "starting afresh" in r.stdout
    assert (out / "metrics.jsonl").read_text().count('"stage": "summary"') == 1  # a fresh file, not appended


def test_resume_uses_the_saved_config_and_names_what_the_command_line_changes(tmp_path):
    out = tmp_path / "out"
    assert train(*SMALL, "--families=add", "--digits=1", "--eval_problems=4", "--passk_problems=2",
                 f"--out_dir={out}").returncode == 0
    r = train(f"--out_dir={out}", "--init_from=resume", "--rl_steps=3", "--device=cpu")
    assert r.returncode == 0, r.stderr[-1500:]
    assert "--rl_steps=3 (was 1)" in r.stdout and "add with 1 digits" in r.stdout  # not the default add,sub / 2
    steps = [int(m) for m in re.findall(r'"stage": "rl", "rl_step": (\d+)', (out / "metrics.jsonl").read_text())]
    assert steps == [1, 2, 3]


def test_resume_refuses_to_change_the_problems_and_overwrite_refuses_to_delete_its_source(tmp_path):
    out = tmp_path / "out"
    assert train(*SMALL, f"--out_dir={out}").returncode == 0
    for flag in ("--seed=7", "--rl_pool=4", "--families=add", "--digits=3"):
        message = main_refusal(f"--out_dir={out}", "--init_from=resume", flag)
        assert f"{flag.split('=')[0]} cannot change on resume" in message, message
    assert "--overwrite would delete --init_from" in main_refusal(*SMALL, f"--out_dir={out}",
                                                             f"--init_from={out / 'ckpt.pt'}", "--overwrite=true")
    assert (out / "ckpt.pt").exists()


def test_the_readme_change_the_task_commands_pass_their_checks():
    """Each `python train.py ...` command of the README's "Change the task" section gets through validation and
    the task-fitting check (the part that used to crash minutes in) at the size it names."""
    from data.tasks import fit_lengths, generate_problems
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Change the task"):]
    section = section[:section.index("\n## ", 3)]
    commands = re.findall(r"^python train\.py (.*)$", section, re.M)
    assert len(commands) >= 3
    for line in commands:
        overrides = config.parse_config(line.split("#")[0].split())
        cfg = config.make_config(overrides, "cpu")
        config.validate(cfg)
        families = cfg.families.split(",")
        assert set(families) <= set(FAMILIES)
        fit_lengths(cfg.max_new_tokens, cfg.block_size, generate_problems(500, seed=0, families=families,
                                                                          digits=cfg.digits))
