"""train.py: the typed config and its errors, the pretraining batch, and that pretraining learns."""
import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import train
from data.tasks import generate_problems
from data.tokenizer import get_tokenizer, encode
from model import GPT, GPTConfig

enc = get_tokenizer()


def run_train(*args, timeout=120):
    return subprocess.run([sys.executable, "train.py", *args], capture_output=True, text=True, timeout=timeout)


def test_overrides_are_typed():
    o = train.parse_config(["--lr=0.01", "--n_layer=2", "--families=add", "--curriculum=true"])
    assert o == dict(lr=0.01, n_layer=2, families="add", curriculum=True)
    cfg = train.make_config(o, "cpu")
    assert cfg.lr == 0.01 and cfg.n_layer == 2 and cfg.preset == "cpu"
    assert train.make_config({}, "cuda").preset == "gpu"
    assert train.make_config({"preset": "cpu"}, "cuda").n_layer == train.Config.n_layer
    # an explicit override wins over the preset
    assert train.make_config({"n_layer": 3}, "cuda").n_layer == 3


@pytest.mark.parametrize("argv, message", [
    (["--lrr=0.1"], "unknown config key 'lrr'"),
    (["--n_layer=2.5"], "--n_layer must be of type int, got '2.5'"),
    (["--lr=fast"], "--lr must be of type float"),
    (["--curriculum=maybe"], "--curriculum must be of type bool"),
    (["n_layer=2"], "look like --key=value"),
    (["--n_layer"], "look like --key=value"),
])
def test_bad_overrides_stop_with_a_message_naming_them(argv, message):
    with pytest.raises(SystemExit) as e:
        train.parse_config(argv)
    assert message in str(e.value)


def test_bad_families_and_presets_are_refused():
    with pytest.raises(SystemExit, match="unknown"):
        train.make_config({"families": "add,div"}, "cpu")
    with pytest.raises(SystemExit, match="preset"):
        train.make_config({"preset": "tpu"}, "cpu")


def test_help_lists_every_field_with_default_and_meaning():
    out = run_train("--help").stdout
    for f in train.dataclasses.fields(train.Config):
        assert f"--{f.name}={f.default}" in out and f.metadata["help"] in out


def test_unknown_key_exits_before_any_work():
    r = run_train("--pretrain_step=3")
    assert r.returncode != 0 and "unknown config key 'pretrain_step'" in r.stderr and "did you mean" in r.stderr
    assert "Traceback" not in r.stderr


def test_pretrain_batch_trains_on_the_response_only():
    problems = generate_problems(4, seed=0)
    x, y = train.pretrain_batch(problems, random.Random(0), enc, think_prob=1.0, error_prob=0.0)
    for i, p in enumerate(problems):
        n_prompt = len(encode(enc, p.prompt))
        assert (y[i, :n_prompt - 1] == -1).all()  # no loss on the prompt
        targets = y[i][y[i] >= 0].tolist()
        assert enc.decode(targets) == f"<think>{p.solution}</think><answer>{p.answer}</answer><|endoftext|>"
        assert x[i, n_prompt - 1] == encode(enc, p.prompt)[-1]  # x is y shifted by one


def test_a_few_pretraining_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32))
    x, y = train.pretrain_batch(generate_problems(16, seed=1), random.Random(1), enc, 0.5, 0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x).view(-1, model.config.vocab_size), y.view(-1), ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


# ------------------------------------------------------------------------------------------------ RL
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--pretrain_steps=3", "--batch_size=8", "--eval_problems=8",
        "--rl_pool=16", "--prompts_per_step=2", "--group_size=4", "--micro_batch=4", "--passk_problems=4",
        "--max_new_tokens=40", "--eval_interval=3", "--warmup_steps=1", "--device=cpu", "--preset=cpu"]


def read_metrics(out):
    import json
    return [json.loads(line) for line in open(out / "metrics.jsonl")]


def test_planted_reward_moves_the_policy():
    """Reward 1 when the first sampled token is `target`: a few GRPO updates must make it more likely."""
    from sample import sample
    from advantage import group_advantages
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=32))
    cfg = train.Config(micro_batch=16, rl_lr=3e-2, max_new_tokens=3)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.rl_lr)
    prompts, target = [[1, 2], [3]], 7
    first_token_prob = lambda: torch.softmax(model(torch.tensor([[1, 2]]))[0, -1], -1)[target].item()
    before = first_token_prob()
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        s = sample(model.eval(), prompts, 8, 3, generator=gen)
        rewards = (s.tokens[:, s.prompt_len] == target).float()  # (B,)
        agg, grad_norm = train.grpo_update(model.train(), opt, s, group_advantages(rewards, 8), cfg,
                                           torch.autocast("cpu", enabled=False))
        assert agg is not None and abs(agg["lp_diff"]) < 1e-4  # on-policy: the trainer agrees with the sampler
    assert first_token_prob() > 2 * before


def test_config_combinations_are_refused_before_any_work(tmp_path):
    cases = [(["--group_size=1"], "--group_size must be >= 2"),
             (["--micro_batch=3"], "--micro_batch=3 does not divide"),
             (["--advantage=ppo"], "--advantage='ppo' is not one of"),
             (["--loss_agg=sum"], "--loss_agg='sum' is not one of"),
             (["--kl_kind=k4"], "--kl_kind='k4'"),
             (["--max_new_tokens=200"], "exceeds --block_size")]
    for args, message in cases:
        r = run_train(*TINY, f"--out_dir={tmp_path}", *args)
        assert r.returncode != 0 and message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and not (tmp_path / "ckpt.pt").exists()
    assert run_train(*TINY, f"--out_dir={tmp_path}", "--group_size=1", "--advantage=none", "--micro_batch=2",
                     "--rl_steps=0", "--pretrain_steps=0").returncode == 0  # REINFORCE needs no group


def test_two_step_rl_run_writes_metrics_checkpoint_and_summary(tmp_path):
    r = run_train(*TINY, f"--out_dir={tmp_path}", "--rl_steps=2", "--kl_coef=0.04")
    assert r.returncode == 0, r.stderr
    import json
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("pretrain_acc", "rl_acc", "corpus_acc", "think_share_before", "think_share_after", "wall_s"):
        assert 0 <= summary[key] <= (1 if key != "wall_s" else 1e4)
    records = read_metrics(tmp_path)
    rl = [m for m in records if m["stage"] == "rl"]
    assert [m["rl_step"] for m in rl] == [1, 2]
    for key in ("reward", "accuracy", "format_rate", "zero_signal", "zero_signal_pred", "kl", "clip_frac",
                "entropy", "grad_norm", "lp_diff", "truncated", "think_share", "sample_s", "train_s"):
        assert key in rl[0]
    assert rl[0]["lp_diff"] < 1e-4  # sampler and trainer compute the same log-probs
    assert any(m["stage"] == "rl_eval" and "pass@4" in m for m in records)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert ckpt["stage"] == "rl" and ckpt["rl_step"] == 2 and ckpt["ref_model"] is not None
    assert "optimizer" in ckpt and "sample_gen" in ckpt


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert run_train(*TINY, f"--out_dir={full}", "--rl_steps=4", "--save_interval=2").returncode == 0
    assert run_train(*TINY, f"--out_dir={part}", "--rl_steps=2", "--save_interval=2").returncode == 0
    r = run_train(*TINY, f"--out_dir={part}", "--rl_steps=4", "--save_interval=2", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    timeless = lambda m: {k: v for k, v in m.items() if not k.endswith("_s") and k != "time"}
    a = [timeless(m) for m in read_metrics(full) if m["stage"] == "rl"]
    b = [timeless(m) for m in read_metrics(part) if m["stage"] == "rl"]
    assert [m["rl_step"] for m in b] == [1, 2, 3, 4]
    assert a == b


def test_non_finite_updates_are_skipped_then_stop_the_run(tmp_path):
    r = run_train(*TINY, f"--out_dir={tmp_path}", "--rl_steps=6", "--rl_lr=1e30", "--max_bad_steps=2",
                  "--save_interval=1", "--grad_clip=0")
    assert r.returncode != 0 and "non-finite updates in a row" in r.stderr, r.stderr[-2000:]
    assert "update skipped" in r.stdout and "Traceback" not in r.stderr
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)  # the last good checkpoint is intact
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    import signal
    import time
    p = subprocess.Popen([sys.executable, "train.py", *TINY, f"--out_dir={tmp_path}", "--rl_steps=10000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (tmp_path / "metrics.jsonl").exists() and '"stage": "rl"' in (tmp_path / "metrics.jsonl").read_text():
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert "checkpoint saved" in err and "Traceback" not in err, err[-2000:]
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert ckpt["stage"] == "rl" and ckpt["rl_step"] >= 1


def test_curriculum_dynamic_sampling_and_reward_shaping_knobs_run(tmp_path):
    r = run_train(*TINY, f"--out_dir={tmp_path}", "--rl_steps=2", "--curriculum=true", "--dynamic_sampling=true",
                  "--length_weight=0.5", "--format_bonus=0.1", "--advantage=rloo", "--loss_agg=seq-sum-constant",
                  "--updates_per_batch=2", "--clip_eps_high=0.28")
    assert r.returncode == 0, r.stderr[-2000:]
    rl = [m for m in read_metrics(tmp_path) if m["stage"] == "rl"]
    assert len(rl) == 2
    # the format bonus is paid for formatted responses only, so the reward is at least 0.1 x the format rate
    assert all(m["reward"] >= 0.1 * m["format_rate"] - 1e-6 for m in rl)
