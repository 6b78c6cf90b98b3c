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
