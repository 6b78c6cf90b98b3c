"""train.py and config.py: the typed config and its errors, pretraining, grading and evaluation, the RL step's
pieces and knobs, and whole runs (tiny ones) with checkpoints, resume and stopping."""
import dataclasses
import json
import random
import signal
import subprocess
import sys
import time
from itertools import combinations

import pytest
import torch
import torch.nn.functional as F

import config
import evaluation
import train
from checkpoint import new_run
from data.tasks import MODES, generate_problems, pretrain_batch, response, with_mode
from data.tokenizer import EOS_ID, PAD_ID, THINK, decode, encode
from model import GPT, GPTConfig, positions
from sample import Samples, sample
from verify import grade_samples


TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--pretrain_steps=3", "--batch_size=8", "--eval_problems=8",
        "--rl_pool=16", "--prompts_per_step=2", "--group_size=4", "--micro_batch=4", "--passk_problems=4",
        "--max_new_tokens=40", "--eval_interval=3", "--warmup_steps=1", "--device=cpu", "--preset=cpu"]


def run_train(*args, timeout=120):
    return subprocess.run([sys.executable, "train.py", *args], capture_output=True, text=True, timeout=timeout)


def read_metrics(out):
    return [json.loads(line) for line in open(out / "metrics.jsonl")]


def autocast_off():
    return torch.autocast("cpu", enabled=False)


def test_overrides_are_typed():
    o = config.parse_config(["--lr=0.01", "--n_layer=2", "--families=add", "--curriculum=true"])
    assert o == dict(lr=0.01, n_layer=2, families="add", curriculum=True)
    cfg = config.make_config(o, "cpu")
    assert cfg.lr == 0.01 and cfg.n_layer == 2 and cfg.preset == "cpu"
    assert config.make_config({}, "cuda").preset == "gpu"
    assert config.make_config({"preset": "cpu"}, "cuda").n_layer == config.Config.n_layer
    # an explicit override wins over the preset
    assert config.make_config({"n_layer": 3}, "cuda").n_layer == 3


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
        config.parse_config(argv)
    assert message in str(e.value)


def test_bad_families_and_presets_are_refused():
    with pytest.raises(SystemExit, match="--families='add,div' must be distinct names from"):
        config.validate(config.make_config({"families": "add,div"}, "cpu"))
    with pytest.raises(SystemExit, match="preset"):
        config.make_config({"preset": "tpu"}, "cpu")


def test_help_lists_every_field_with_default_and_meaning():
    out = run_train("--help").stdout
    for f in config.dataclasses.fields(config.Config):
        assert f"--{f.name}={f.default}" in out and f.metadata["help"] in out


def test_unknown_key_exits_before_any_work():
    r = run_train("--pretrain_step=3")
    assert r.returncode != 0 and "unknown config key 'pretrain_step'" in r.stderr and "did you mean" in r.stderr
    assert "Traceback" not in r.stderr


def test_pretrain_batch_trains_on_the_response_only():
    problems = generate_problems(4, seed=0)
    x, y = pretrain_batch(problems, random.Random(0), think_prob=1.0, error_prob=0.0)
    for i, p in enumerate(problems):
        n_prompt = len(encode(p.prompt))
        assert (y[i, :n_prompt - 1] == -1).all()  # no loss on the prompt
        targets = y[i][y[i] >= 0].tolist()
        assert decode(targets) == f"<think>{p.solution}</think><answer>{p.answer}</answer><|endoftext|>"
        assert x[i, n_prompt - 1] == encode(p.prompt)[-1]  # x is y shifted by one


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    cfg = config.Config(lr=1e-2, warmup_steps=10, pretrain_steps=110)
    assert train.lr_at(0, cfg) == pytest.approx(1e-3) and train.lr_at(9, cfg) == pytest.approx(1e-2)
    assert train.lr_at(60, cfg) == pytest.approx(0.5 * (1e-2 + 1e-3))  # half way down the cosine
    assert train.lr_at(110, cfg) == pytest.approx(1e-3) and train.lr_at(500, cfg) == pytest.approx(1e-3)
    lrs = [train.lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_weight_decay_applies_to_matrices_only():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16))
    opt = train.make_optimizer(model, 1e-3, 0.1)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_pretrain_step_sets_the_lr_clips_the_gradient_and_lowers_the_loss():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32))
    x, y = pretrain_batch(generate_problems(16, seed=1), random.Random(1), 0.5, 0.0)
    opt = train.make_optimizer(model, 3e-3, 0.1)
    off = autocast_off()
    losses = [train.pretrain_step(model, opt, x, y, 3e-3, 1.0, off) for _ in range(30)]
    assert opt.param_groups[0]["lr"] == opt.param_groups[1]["lr"] == 3e-3
    assert losses[-1] < 0.6 * losses[0]
    # the gradient the optimizer sees is clipped to norm 1e-3 (the loss's own gradient is far larger)
    seen = []
    opt.step = lambda: seen.append(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item())
    train.pretrain_step(model, opt, x, y, 3e-3, 1e-3, off)
    train.pretrain_step(model, opt, x, y, 3e-3, 0.0, off)  # 0: no clipping
    assert seen[0] == pytest.approx(1e-3, rel=1e-3) and seen[1] > 1e-2


# ------------------------------------------------------------------------------------------------ grading
def test_thinks_needs_a_non_empty_think_block():
    assert evaluation.thinks(response("1+1=2", "2")) and not evaluation.thinks(response("", "2"))
    assert not evaluation.thinks(response("  \n", "2")) and not evaluation.thinks("2")


def test_think_tokens_counts_the_thought_and_the_budget_forces_close_then_answer():
    assert evaluation.think_tokens(response("7+5+0=12", "12")) == 8
    assert evaluation.think_tokens(response("", "12")) == 0 and evaluation.think_tokens("12") == 0
    assert evaluation.think_tokens("<think>7+5") == 3  # never closed: all of it
    force = evaluation.cut_thinking(5)  # called after each step with the completions so far, 6 tokens here:
    rows = ["<think>1+2+3", "x<think>1+2+", "<think>1</think>+23", "123456"]  # 5 after <think>, 4, closed, none
    completions = torch.tensor([encode(r) for r in rows])  # (4, 6)
    assert {r: decode(f) for r, f in force(completions).items()} == {0: "</think><answer>"}


def test_pass_at_k_equals_brute_force_over_subsets():
    for n, c, k in [(8, 0, 1), (8, 3, 1), (8, 3, 4), (8, 5, 4), (8, 8, 8), (6, 1, 6), (5, 2, 3)]:
        subsets = list(combinations([True] * c + [False] * (n - c), k))
        assert evaluation.pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def samples_of(prompts, completions, finished):
    """A Samples batch holding the given completion texts (their EOS appended when finished), left-padded."""
    rows = [(encode(p), encode(c) + ([EOS_ID] if f else [])) for p, c, f in zip(prompts, completions, finished)]
    Lp, N = max(len(p) for p, _ in rows), max(len(c) for _, c in rows)
    tokens = torch.full((len(rows), Lp + N), PAD_ID)
    valid = torch.zeros(len(rows), Lp + N, dtype=torch.bool)
    for i, (p, c) in enumerate(rows):
        tokens[i, Lp - len(p):Lp + len(c)] = torch.tensor(p + c)
        valid[i, Lp - len(p):Lp + len(c)] = True
    mask = valid.clone()
    mask[:, :Lp] = False
    return Samples(tokens, valid, mask.float(), torch.zeros(len(rows), Lp + N), torch.tensor(finished),
                   mask.sum(1), Lp)


def test_grade_samples_strips_eos_and_never_credits_a_truncated_answer():
    right, wrong = response("2+2=4", "4"), response("", "5")
    s = samples_of(["What is 2+2?\n"] * 3, [right, wrong, right], [True, True, False])
    texts, grades = grade_samples(s, ["4", "4", "4"])
    assert texts == [right, wrong, right]  # the EOS is not part of what the verifier reads
    assert [g.reason for g in grades] == ["ok", "wrong_value", "truncated"]
    assert [g.correct for g in grades] == [True, False, False]  # right but cut off at max_new_tokens: not correct


def test_grade_samples_passes_check_form_on_so_the_echoed_question_pays_only_when_it_is_off():
    echo, expanded = response("", "(x+3)(x-2)"), response("", "x^2+x-6")
    s = samples_of(["Expand (x+3)(x-2).\n"] * 2, [echo, expanded], [True, True])
    assert [g.correct for g in grade_samples(s, ["x^2+x-6"] * 2)[1]] == [False, True]  # the default: form counts
    assert [g.correct for g in grade_samples(s, ["x^2+x-6"] * 2, check_form=False)[1]] == [True, True]


def test_evaluate_reports_accuracy_per_family_think_share_length_and_pass_at_k(monkeypatch):
    problems = generate_problems(2, seed=0, families=("add",)) + generate_problems(2, seed=0, families=("sub",))
    greedy = [response(problems[0].solution, problems[0].answer), response("", "0"),
              response(problems[2].solution, problems[2].answer), response("", problems[3].answer)]

    def fake_sample(model, prompts, group_size, *args, **kwargs):  # what the model "writes"
        if group_size == 1:
            return samples_of([p.prompt for p in problems], greedy, [True] * 4)
        texts = [response("", p.answer if j < i else "1") for i, p in enumerate(problems[:2]) for j in range(4)]
        return samples_of([p.prompt for p in problems[:2] for _ in range(4)], texts, [True] * 8)
    monkeypatch.setattr(evaluation, "sample", fake_sample)
    ev = evaluation.evaluate(torch.nn.Module(), problems, [encode(p.prompt) for p in problems], max_new_tokens=100,
                             passk_problems=2, group_size=4)
    lengths = [len(encode(t)) + 1 for t in greedy]  # EOS included
    assert ev["acc"] == 0.75 and ev["acc_add"] == 0.5 and ev["acc_sub"] == 1.0
    assert ev["think_share"] == 0.5 and ev["response_len"] == pytest.approx(sum(lengths) / 4)
    # problem 0 is right in 0 of its 4 samples, problem 1 in 1 of 4
    assert ev["pass@1"] == pytest.approx((0 + 0.25) / 2) and ev["pass@4"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------ RL
def update(model, optimizer, samples, advantages, cfg, autocast=None, ref_model=None):
    """train.grpo_update, then its diagnostics (None when the update was skipped)."""
    passes = train.grpo_update(model, optimizer, samples, advantages, ref_model, cfg, autocast or autocast_off())
    return None if passes is None else train.diagnostics(passes, samples)


def rl_batch(model, pool, pool_ids, run, cfg):
    """Steps 1-3 of train.main's RL loop (sample, grade, group advantages), made of the same calls, in order."""
    G = cfg.group_size
    prompt_idx, uniforms = train.draw_prompts(run, len(pool), cfg)
    force = [train.cut_thinking(cfg.think_budget)] if cfg.think_budget >= 0 else []
    samples = sample(model.eval(), [pool_ids[i] for i in prompt_idx], G, cfg.max_new_tokens, cfg.temperature, EOS_ID,
                     uniforms=uniforms, pad_id=PAD_ID, force=force)
    problems = [pool[i] for i in prompt_idx for _ in range(G)]
    texts, grades = train.grade_samples(samples, [p.answer for p in problems], cfg.check_form)
    broke = train.breaks_flag(texts, problems)
    correct = torch.tensor([g.correct for g in grades]) & ~(broke & cfg.mode_contract)
    extra = train.shaping(grades, correct, broke, samples.lengths, run["rl_step"], cfg)
    advantages = train.shaped_advantages(correct.float(), extra, G, cfg.advantage, unbiased_std=cfg.unbiased_std)
    train.track_success(run, prompt_idx, correct, G)
    batch = dict(samples=samples, problems=problems, texts=texts, grades=grades, correct=correct,
                 rewards=correct.float() + extra, advantages=advantages, broke=broke)
    drawn = train.group_stats(correct, advantages, G)["zero_signal"]
    return (train.keep_groups(batch, G) if cfg.dynamic_sampling else batch), drawn


def test_planted_reward_moves_the_policy():
    """Reward 1 when the first sampled token is `target`: a few GRPO updates must make it more likely."""
    from advantage import group_advantages
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=32))
    cfg = config.Config(micro_batch=16, rl_lr=3e-2, max_new_tokens=3)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.rl_lr)
    prompts, target = [[1, 2], [3]], 7
    first_token_prob = lambda: torch.softmax(model(torch.tensor([[1, 2]]))[0, -1], -1)[target].item()
    before = first_token_prob()
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        s = sample(model.eval(), prompts, 8, 3, generator=gen)
        rewards = (s.tokens[:, s.prompt_len] == target).float()  # (B,)
        diag = update(model, opt, s, group_advantages(rewards, 8), cfg)
        assert diag is not None and diag["lp_diff"] < 1e-4  # on-policy: the trainer agrees with the sampler
        assert diag["clip_frac"] == 0 and diag["ratio_max"] == pytest.approx(1.0)  # rho = 1 in the only pass
    assert first_token_prob() > 2 * before


def test_later_passes_report_what_the_clip_did():
    """With updates_per_batch = 2 the second pass sees rho != 1, and clip_frac / ratio_max come from it."""
    from advantage import group_advantages
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=32))
    s = sample(model.eval(), [[1, 2], [3]], 8, 3, generator=torch.Generator().manual_seed(0))
    advantages = group_advantages(torch.arange(16.0) % 3, 8)
    steps = []
    for passes in (1, 2):
        model_mu = GPT(model.config)
        model_mu.load_state_dict(model.state_dict())
        opt = torch.optim.AdamW(model_mu.parameters(), lr=0.05)
        cfg = config.Config(micro_batch=8, updates_per_batch=passes, max_new_tokens=3)
        diag = update(model_mu, opt, s, advantages, cfg)
        steps.append(opt.state[next(model_mu.parameters())]["step"].item())
        assert (diag["ratio_max"] > 1.05) == (passes == 2) and (diag["clip_frac"] > 0) == (passes == 2)
    assert steps == [1, 2]


def test_curriculum_draws_unsolved_prompts_more_often():
    run = new_run(0, 4)
    run["success"] = torch.tensor([1.0, 1.0, 1.0, 0.0])  # prompt 3 is never solved
    knobs = dict(prompts_per_step=4000, group_size=1, max_new_tokens=1)
    uniform = train.draw_prompts(run, 4, config.Config(**knobs))[0]
    curriculum = train.draw_prompts(run, 4, config.Config(**knobs, curriculum=True))[0]
    assert 0.2 < uniform.count(3) / 4000 < 0.3
    assert curriculum.count(3) / 4000 == pytest.approx(1 / (1 + 3 * 0.05), abs=0.03)  # weights 1 vs the floor 0.05


def test_dynamic_sampling_keeps_groups_with_signal_first():
    from advantage import group_advantages
    rewards = torch.tensor([1., 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1])  # groups of 4: mixed, 0s, mixed, 1s
    s = samples_of(["What is 1+1?\n"] * 16, [str(i) for i in range(16)], [True] * 16)
    batch = dict(samples=s, problems=list(range(16)), advantages=group_advantages(rewards, 4), rewards=rewards)
    kept = train.keep_groups(batch, 4)
    assert kept["problems"] == [0, 1, 2, 3, 8, 9, 10, 11] and torch.equal(kept["rewards"], rewards[[0, 1, 2, 3, 8, 9,
                                                                                                    10, 11]])
    assert torch.equal(kept["samples"].tokens, s.tokens[[0, 1, 2, 3, 8, 9, 10, 11]])
    flat = dict(batch, advantages=torch.zeros(16))  # no group has a signal: the first half, in drawing order
    assert train.keep_groups(flat, 4)["problems"] == list(range(8))


@pytest.fixture
def rl_setup(monkeypatch):
    """A tiny model, a pool, and a verifier stand-in that rewards completions of even length: the rewards vary
    within groups, so every knob has something to act on (the real verifier would reward an untrained model 0)."""
    import verify

    def fake_grade(text, truth, check_form=True):
        ok = len(text) % 2 == 0
        return verify.Grade(ok, ok, "ok" if ok else "wrong_value")
    monkeypatch.setattr(verify, "grade", fake_grade)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32))
    with torch.no_grad():  # every position's next token: EOS with p ~ 0.15, else nearly uniform
        model.transformer.ln_f.weight.zero_()  # the final hidden state is ln_f.bias, whatever the input
        model.transformer.ln_f.bias.fill_(1.0)
        model.transformer.wte.weight[EOS_ID] = 0.12  # EOS's logit = 32 x 0.12 = 3.8
    pool = generate_problems(16, seed=0)
    return model, pool, [encode(p.prompt) for p in pool]


def test_the_rl_knobs_each_change_what_they_should(rl_setup):
    from advantage import group_advantages, length_rewards
    model, pool, pool_ids = rl_setup
    base = dict(prompts_per_step=4, group_size=4, max_new_tokens=20)

    def roll(**kw):
        run = new_run(0, len(pool))
        return rl_batch(model, pool, pool_ids, run, config.Config(**base, **kw))[0], run
    plain, run = roll()
    r, G = plain["rewards"], 4
    assert 0 < r.mean() < 1 and torch.equal(plain["advantages"], group_advantages(r, G))
    assert not torch.equal(run["success"], torch.full((16,), 0.5))  # the curriculum's estimate moved
    rloo = roll(advantage="rloo")[0]
    assert torch.equal(rloo["rewards"], r) and torch.allclose(rloo["advantages"], group_advantages(r, G, "rloo"))
    assert not torch.allclose(rloo["advantages"], plain["advantages"])
    shaped = roll(length_weight=0.5)[0]
    lam = length_rewards(shaped["samples"].lengths, shaped["correct"], G)
    assert torch.allclose(shaped["rewards"], r + 0.5 * lam)  # what the policy is paid, logged ...
    expected = group_advantages(r, G) + group_advantages(0.5 * lam, G, "drgrpo")  # ... and learned, undivided
    assert torch.allclose(shaped["advantages"], expected)
    assert not torch.allclose(shaped["advantages"], plain["advantages"])
    assert torch.equal(roll(length_weight=0.5, length_start=5)[0]["advantages"], plain["advantages"])  # not yet on
    bonus = roll(format_bonus=0.1)[0]  # paid for every formatted response, right or wrong
    formatted = torch.tensor([g.formatted for g in plain["grades"]]).float()
    assert torch.allclose(bonus["rewards"], r + 0.1 * formatted)
    assert torch.allclose(bonus["advantages"], group_advantages(r, G) + group_advantages(0.1 * formatted, G, "drgrpo"))
    run = new_run(0, len(pool))
    dyn, drawn = rl_batch(model, pool, pool_ids, run, config.Config(**base, dynamic_sampling=True))
    assert dyn["samples"].tokens.shape[0] == 16 and len(dyn["problems"]) == 16  # 8 prompts drawn, 4 groups kept
    kept = train.group_stats(dyn["correct"], dyn["advantages"], G)["zero_signal"]
    assert kept <= drawn and kept < 1


def test_fusion_a_broken_flag_earns_nothing_unless_the_contract_is_off(rl_setup, monkeypatch):
    """--thinking=fusion: a /no_think row that thinks, or a /think row that does not, breaks its prompt's flag;
    with mode_contract its reward is 0, and without it the verifier's. (The stand-in "thinks" on a third of
    the lengths, so both kinds of breakage occur.)"""
    model, pool, _ = rl_setup
    pool = [with_mode(p, m) for p in pool for m in MODES]
    monkeypatch.setattr(train, "thinks", lambda text: len(text) % 3 == 0)
    knobs = dict(prompts_per_step=8, group_size=4, max_new_tokens=20)
    on, off = (rl_batch(model, pool, [encode(p.prompt) for p in pool], new_run(0, len(pool)),
                        config.Config(**knobs, mode_contract=c))[0] for c in (True, False))
    assert on["texts"] == off["texts"]
    modes = [p.mode for p in on["problems"]]
    broke = torch.tensor([(len(t) % 3 == 0) != (m == "think") for t, m in zip(on["texts"], modes)])
    assert torch.equal(on["broke"], broke) and {"think", "no_think"} == set(modes)
    assert torch.equal(on["rewards"], off["rewards"] * ~broke)
    assert (off["rewards"][broke] > 0).any() and (on["rewards"] > 0).any()  # the contract took reward away


def test_forced_budget_tokens_are_masked_out_of_the_loss(rl_setup):
    """RL under a thinking budget: the forced </think><answer> were not sampled, so the loss mask skips them and
    the sampler-vs-trainer log-prob gap stays ~0 (were they scored, it would be their log-prob under the model,
    about -5)."""
    model, pool, pool_ids = rl_setup
    with torch.no_grad():  # <think> now as likely as EOS, so rows open a thought and run out of budget
        model.transformer.wte.weight[encode(THINK)[0]] = 0.12
    cfg = config.Config(prompts_per_step=4, group_size=4, max_new_tokens=20, think_budget=2)
    batch = rl_batch(model, pool, pool_ids, new_run(0, len(pool)), cfg)[0]
    s = batch["samples"]
    forced = s.key_mask & (s.mask == 0)
    forced[:, :s.prompt_len] = False
    assert forced.sum() >= 4 and torch.all(s.logprobs[forced] == 0)
    think, answer = encode(THINK + "</think><answer>")[:1], encode("</think><answer>")
    assert sorted(set(s.tokens[forced].tolist())) == sorted(answer) and think[0] not in s.tokens[forced].tolist()
    d = update(model, torch.optim.SGD(model.parameters(), lr=0.0), s, batch["advantages"], cfg)
    assert d["lp_diff"] < 1e-4


def test_a_tiny_fusion_run_reports_both_modes_and_the_budget_curve(tmp_path):
    r = run_train(*TINY, f"--out_dir={tmp_path}", "--rl_steps=2", "--thinking=fusion")
    assert r.returncode == 0, r.stderr
    records = read_metrics(tmp_path)
    rl = [m for m in records if m["stage"] == "rl"]
    assert all(0 <= m["mode_violations"] <= 1 and "think_share_no_think" in m for m in rl)
    modes = next(m for m in records if m["stage"] == "modes")
    for rows in (modes["before"], modes["after"]):
        assert [(x["mode"], x["budget"]) for x in rows] == [("no_think", None)] + [("think", n) for n in
                                                                                 evaluation.BUDGETS]
        assert all(0 <= x["acc"] <= 1 and 0 <= x["think_len"] for x in rows)
        assert all(x["think_len"] <= x["budget"] for x in rows if x["budget"] is not None)  # the cut held
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"no_think_acc_before", "no_think_acc_after", "no_think_think_share_after"} <= set(summary)
    assert "/no_think" in r.stdout and "broke flag" in r.stdout
    assert (tmp_path / "modes.svg").read_text().count("<polyline") == 2
    plain = run_train(*TINY, f"--out_dir={tmp_path / 'plain'}", "--rl_steps=1")
    assert plain.returncode == 0 and "/no_think" not in plain.stdout  # without fusion, nothing of it
    assert not any("mode_violations" in m or m["stage"] == "modes" for m in read_metrics(tmp_path / "plain"))


def test_a_tiny_poly_run_logs_the_unexpanded_share_by_the_strict_grader(tmp_path):
    r = run_train(*TINY, f"--out_dir={tmp_path}", "--rl_steps=2", "--families=poly", "--digits=1",
                  "--check_form=false", "--echo_prob=0.5", "--max_new_tokens=0")
    assert r.returncode == 0, r.stderr
    records = read_metrics(tmp_path)
    assert all(0 <= m["unexpanded"] <= 1 for m in records if m["stage"] in ("rl", "rl_eval"))
    assert "| unexpanded" in r.stdout


def test_config_combinations_are_refused_before_any_work(tmp_path):
    cases = [(["--group_size=1"], "--group_size must be >= 2"),
             (["--micro_batch=3"], "--micro_batch=3 does not divide"),
             (["--advantage=ppo"], "--advantage='ppo' must be one of"),
             (["--loss_agg=sum"], "--loss_agg='sum' must be one of"),
             (["--kl_kind=k4"], "--kl_kind='k4'"),
             (["--max_new_tokens=200", "--block_size=128"], "exceeds the block size 128")]
    for args, message in cases:  # in this process: a refusal comes before any work
        with pytest.raises(SystemExit) as e:
            train.main([*TINY, f"--out_dir={tmp_path}", *args])
        assert message in str(e.value) and not (tmp_path / "ckpt.pt").exists(), (args, str(e.value))
    assert run_train(*TINY, f"--out_dir={tmp_path}", "--group_size=1", "--advantage=none", "--micro_batch=2",
                     "--rl_steps=0", "--pretrain_steps=0").returncode == 0  # REINFORCE needs no group


def test_two_step_rl_run_writes_metrics_checkpoint_and_summary(tmp_path):
    r = run_train(*TINY, f"--out_dir={tmp_path}", "--rl_steps=2", "--kl_coef=0.04")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("pretrain_acc", "rl_acc", "corpus_acc", "think_share_before", "think_share_after", "wall_s"):
        assert 0 <= summary[key] <= (1 if key != "wall_s" else 1e4)
    records = read_metrics(tmp_path)
    rl = [m for m in records if m["stage"] == "rl"]
    assert [m["rl_step"] for m in rl] == [1, 2]
    for key in ("reward", "acc", "format_rate", "zero_signal", "zero_signal_pred", "loss", "kl", "clip_frac",
                "entropy", "grad_norm", "lp_diff", "truncated", "think_share", "sample_s", "train_s"):
        assert key in rl[0]
    assert rl[0]["lp_diff"] < 1e-4  # sampler and trainer compute the same log-probs
    assert "loss +" in r.stdout or "loss -" in r.stdout  # the loss is printed, not only computed
    assert any(m["stage"] == "rl_eval" and "pass@4" in m for m in records)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert ckpt["stage"] == "rl" and ckpt["rl_step"] == 2 and ckpt["ref_model"] is not None
    assert "optimizer" in ckpt and "sample_gen" in ckpt


def test_the_gpu_preset_code_path_runs_on_cpu_at_a_tiny_size(tmp_path):
    """--preset=gpu: all four families at 3 digits, 160 new tokens in a 192-token context (bf16 only on CUDA)."""
    r = run_train("--preset=gpu", "--device=cpu", "--n_layer=1", "--n_head=2", "--n_embd=32", "--pretrain_steps=2",
                  "--eval_interval=2", "--batch_size=4", "--eval_problems=24", "--rl_pool=16", "--prompts_per_step=2",
                  "--group_size=2", "--micro_batch=4", "--passk_problems=2", "--rl_steps=1", f"--out_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["preset"] == "gpu"
    ev = [m for m in read_metrics(tmp_path) if m["stage"] == "rl_eval"][-1]
    assert {"acc_add", "acc_sub", "acc_mul", "acc_lin", "pass@2"} <= set(ev)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert ckpt["config"]["digits"] == 3 and ckpt["model_config"]["block_size"] == 192


def test_another_runs_checkpoint_starts_a_new_rl_stage(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_train(*TINY, f"--out_dir={first}", "--rl_steps=2").returncode == 0
    r = run_train(*TINY, f"--out_dir={second}", f"--init_from={first / 'ckpt.pt'}", "--rl_steps=2")
    assert r.returncode == 0, r.stderr
    assert [m["rl_step"] for m in read_metrics(second) if m["stage"] == "rl"] == [1, 2]
    assert "pretrain step" not in r.stdout and "before RL" in r.stdout


@pytest.mark.parametrize("knobs", [pytest.param([], marks=pytest.mark.slow),
                                   ["--curriculum=true", "--dynamic_sampling=true", "--kl_coef=0.04",
                                    "--updates_per_batch=2", "--length_weight=0.5", "--staleness=2",
                                    "--policy_loss=gspo"]])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, knobs):
    """Every piece of state a knob keeps (success rates, the reference, Adam's moments) survives a checkpoint."""
    full, part = tmp_path / "full", tmp_path / "part"
    assert run_train(*TINY, *knobs, f"--out_dir={full}", "--rl_steps=4", "--save_interval=2").returncode == 0
    assert run_train(*TINY, *knobs, f"--out_dir={part}", "--rl_steps=2", "--save_interval=2").returncode == 0
    r = run_train(*TINY, *knobs, f"--out_dir={part}", "--rl_steps=4", "--save_interval=2", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    timeless = lambda m: {k: v for k, v in m.items() if not k.endswith("_s") and k != "time"}
    a = [timeless(m) for m in read_metrics(full) if m["stage"] == "rl"]
    b = [timeless(m) for m in read_metrics(part) if m["stage"] == "rl"]
    assert [m["rl_step"] for m in b] == [1, 2, 3, 4]
    assert a == b
    wa, wb = (torch.load(d / "ckpt.pt", weights_only=False)["model"] for d in (full, part))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_non_finite_update_is_skipped_and_leaves_the_weights_untouched():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=32))
    s = sample(model.eval(), [[1, 2]], 4, 3, generator=torch.Generator().manual_seed(0))
    s.logprobs[0, -1] = float("nan")  # one poisoned pi_old
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    cfg = config.Config(micro_batch=4, max_new_tokens=3)
    assert update(model, opt, s, torch.tensor([1.0, -1, 1, -1]), cfg) is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not opt.state


def test_non_finite_updates_in_a_row_stop_the_run(tmp_path):
    assert run_train(*TINY, f"--out_dir={tmp_path / 'a'}", "--rl_steps=0").returncode == 0
    ckpt = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=False)
    ckpt["model"]["lm_head.weight"][5, 0] = float("nan")  # every logit, log-prob and loss is NaN from here on
    torch.save(ckpt, tmp_path / "nan.pt")
    r = run_train(*TINY, f"--out_dir={tmp_path / 'b'}", f"--init_from={tmp_path / 'nan.pt'}", "--rl_steps=6",
                  "--max_bad_steps=2", "--save_interval=1")
    assert r.returncode != 0 and "2 non-finite updates in a row; stopping" in r.stderr, r.stderr[-2000:]
    assert r.stdout.count("update skipped") == 2 and "Traceback" not in r.stderr
    saved = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=False)  # step 1's save: no update was made
    assert saved["rl_step"] == 1 and saved["skipped"] == 1
    assert all(torch.allclose(v, ckpt["model"][k], equal_nan=True) for k, v in saved["model"].items())


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM])
def test_a_stop_signal_ends_the_step_saves_and_resumes_exactly(tmp_path, sig):
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM: the step in flight completes, a checkpoint is written, and
    resuming continues exactly as the uninterrupted run (the same weights at the end)."""
    full, part = tmp_path / "full", tmp_path / "part"
    assert run_train(*TINY, f"--out_dir={full}", "--rl_steps=20").returncode == 0
    p = subprocess.Popen([sys.executable, "train.py", *TINY, f"--out_dir={part}", "--rl_steps=20"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (part / "metrics.jsonl").exists() and '"stage": "rl"' in (part / "metrics.jsonl").read_text():
            break
        time.sleep(0.05)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert f"stopped by {sig.name}" in err and "checkpoint saved" in err and "Traceback" not in err, err[-2000:]
    stopped_at = torch.load(part / "ckpt.pt", weights_only=False)["rl_step"]
    assert 1 <= stopped_at < 20, "the signal came too late to test anything"
    assert run_train(*TINY, f"--out_dir={part}", "--rl_steps=20", "--init_from=resume").returncode == 0
    a, b = (torch.load(d / "ckpt.pt", weights_only=False)["model"] for d in (full, part))
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------ knobs that must agree with each other
def test_curriculum_learns_from_every_drawn_group_even_those_dynamic_sampling_drops(rl_setup):
    """Dynamic sampling drops the all-pass and all-fail groups, which are exactly what the curriculum must see."""
    model, pool, pool_ids = rl_setup
    run = new_run(0, len(pool))
    run["success"].fill_(0.33)  # 0.7 * 0.33 + 0.3 * c is 0.33 for no pass rate c in {0, 1/4, ..., 1}
    cfg = config.Config(prompts_per_step=4, group_size=4, max_new_tokens=20, curriculum=True, dynamic_sampling=True)
    copy = dict(run, data_rng=random.Random(0), sample_gen=torch.Generator().manual_seed(0))
    drawn = train.draw_prompts(copy, len(pool), cfg)[0]  # the prompts rl_batch will draw, from the same generator
    run["data_rng"] = random.Random(0)
    batch = rl_batch(model, pool, pool_ids, run, cfg)[0]
    assert len(drawn) == 8 and len(batch["problems"]) == 16  # 8 groups drawn, 4 trained on
    assert all(run["success"][i] != 0.33 for i in drawn)
    untouched = set(range(len(pool))) - set(drawn)
    assert all(run["success"][i] == pytest.approx(0.33) for i in untouched)


def test_a_response_that_breaks_its_flag_is_not_correct_anywhere_downstream(rl_setup, monkeypatch):
    """--thinking=fusion with the contract: a flag-breaking response earns 0, and it is not `correct` either, so
    it cannot earn a length reward, count in the curriculum's pass rates, or lift the logged accuracy."""
    model, pool, _ = rl_setup
    pool = [with_mode(p, m) for p in pool for m in MODES]
    monkeypatch.setattr(train, "thinks", lambda text: len(text) % 3 == 0)
    cfg = config.Config(prompts_per_step=8, group_size=4, max_new_tokens=20)
    batch = rl_batch(model, pool, [encode(p.prompt) for p in pool], new_run(0, len(pool)), cfg)[0]
    broke = batch["broke"]
    assert broke.any() and not batch["correct"][broke].any()
    record = train.rl_record(1, batch, 0.0, config.Config(thinking="fusion"))
    assert record["acc"] == pytest.approx(record["reward"])  # no longer above what was paid
    lam = train.length_rewards(batch["samples"].lengths, batch["correct"], 4)
    assert (lam[broke] <= 0).all()  # a short flag-breaking row earns no length bonus
    off = rl_batch(model, pool, [encode(p.prompt) for p in pool], new_run(0, len(pool)),
                   config.Config(prompts_per_step=8, group_size=4, max_new_tokens=20, mode_contract=False))[0]
    assert off["correct"][broke].any()  # without the contract a flag-breaking right answer stays right


def test_thinks_reads_the_response_as_the_verifier_does_leading_whitespace_included():
    text = " \n" + response("7+5=12", "12")
    from verify import grade
    assert grade(text, "12").correct  # the verifier accepts the whitespace ...
    assert evaluation.thinks(text) and evaluation.think_tokens(text) == 6  # ... and so does the think check


def test_zero_signal_and_dynamic_sampling_look_at_what_the_advantages_see(rl_setup, monkeypatch):
    """Every answer right: without shaping no group has a signal; with Kimi's length reward the groups whose
    lengths differ do, and dynamic sampling keeps those."""
    model, pool, pool_ids = rl_setup

    import verify
    monkeypatch.setattr(verify, "grade", lambda text, truth, check_form=True: verify.Grade(True, True, "ok"))
    base = dict(prompts_per_step=4, group_size=4, max_new_tokens=20, dynamic_sampling=True)
    plain, drawn = rl_batch(model, pool, pool_ids, new_run(0, len(pool)), config.Config(**base))
    shaped, drawn_shaped = rl_batch(model, pool, pool_ids, new_run(0, len(pool)),
                                    config.Config(**base, length_weight=0.5))
    assert drawn == 1.0 and (plain["advantages"] == 0).all()
    assert drawn_shaped < 1.0
    kept = shaped["advantages"].view(-1, 4)
    assert (kept != 0).any(1).all()  # every kept group carries a push


def test_a_task_the_verifier_cannot_grade_is_refused_before_any_work():
    """--digits=50: every answer has more digits than the verifier reads (verify.MAX_DIGITS), so no response could
    ever earn a reward. Refused, with the reason, before the model is built."""
    cfg = config.make_config(dict(digits=50, rl_pool=16, eval_problems=8), "cpu")
    with pytest.raises(SystemExit, match="verifier cannot grade.*--digits=50.*at most 40 digits"):
        train.make_task(cfg, None)


def test_max_new_tokens_shorter_than_every_teacher_response_is_refused():
    cfg = config.make_config(dict(max_new_tokens=5, rl_pool=16, eval_problems=8), "cpu")
    with pytest.raises(SystemExit, match="--max_new_tokens=5 .*shortest"):
        train.make_task(cfg, None)


# ------------------------------------------------------------------------ on-policy means ratio 1, in every precision
def test_the_first_pass_is_on_policy_under_bf16_autocast(rl_setup):
    """The sampler draws in float32; under bf16 autocast the trainer's log-probs differ from it by rounding
    (~1e-2, up to ~0.2 for a trained model). The first pass must still see rho = 1 exactly: no clipping of an
    on-policy batch. lp_diff still reports the gap, as a diagnostic."""
    model, pool, pool_ids = rl_setup
    cfg = config.Config(prompts_per_step=4, group_size=4, max_new_tokens=20, micro_batch=8)
    batch = rl_batch(model, pool, pool_ids, new_run(0, len(pool)), cfg)[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    d = update(model, opt, batch["samples"], batch["advantages"], cfg, torch.autocast("cpu", dtype=torch.bfloat16))
    assert d["clip_frac"] == 0 and d["ratio_max"] == 1.0
    assert 0 < d["lp_diff"] < 0.5  # the gap is real, and bounded


def test_trainer_and_sampler_agree_at_a_temperature_other_than_1(rl_setup):
    """Were the trainer to score at temperature 1 what was sampled at 0.7, the gap would be ~0.1, not 1e-5."""
    model, pool, pool_ids = rl_setup
    cfg = config.Config(prompts_per_step=4, group_size=4, max_new_tokens=20, temperature=0.7)
    batch = rl_batch(model, pool, pool_ids, new_run(0, len(pool)), cfg)[0]
    d = update(model, torch.optim.SGD(model.parameters(), lr=0.0), batch["samples"], batch["advantages"], cfg)
    assert d["lp_diff"] < 1e-4 and d["ratio_max"] == pytest.approx(1.0, abs=1e-4)


# ------------------------------------------------------------------------ less padding, the same loss and gradient
def grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_pretraining_micro_batches_by_length_give_the_padded_batch_s_loss_and_gradient():
    """by_length sorts a batch by length and trims each micro-batch to its longest row: the same tokens, less
    padding. The loss and the gradient are those of the one padded batch, to float rounding."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32))
    x, y = pretrain_batch(generate_problems(16, seed=3), random.Random(3), 0.5, 0.0)  # (16, T) each
    lengths = (x != PAD_ID).sum(1)
    assert lengths.min() < 0.6 * x.shape[1]  # direct and worked answers: much padding to save
    still = torch.optim.SGD(model.parameters(), lr=0.0)
    logits = model(x)  # the plain computation: one padded batch
    plain = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1, reduction="sum") / (y >= 0).sum()
    plain.backward()
    expected = grads(model)
    for micro_batch in (16, 5, 1):
        loss = train.pretrain_step(model, still, x, y, 0.0, 0.0, autocast_off(), micro_batch=micro_batch)
        assert loss.item() == pytest.approx(plain.item(), rel=1e-6)
        torch.testing.assert_close(grads(model), expected, atol=1e-6, rtol=1e-5)
    widths = [w for _, w in train.by_length(lengths, 4)]
    assert widths == sorted(widths) and widths[0] < widths[-1] == x.shape[1]


def test_rl_micro_batches_by_length_give_the_padded_batch_s_gradient(rl_setup):
    """The same for grpo_update: rows sorted by length into micro-batches, each trimmed, against one plain padded
    forward of the whole batch through grpo_loss."""
    from grpo import grpo_loss, token_logprobs
    model, pool, pool_ids = rl_setup
    cfg = config.Config(prompts_per_step=4, group_size=4, max_new_tokens=20, micro_batch=3)
    batch = rl_batch(model, pool, pool_ids, new_run(0, len(pool)), cfg)[0]
    s, adv = batch["samples"], batch["advantages"]
    assert s.lengths.min() < s.lengths.max()
    model.zero_grad()
    hidden = model(s.tokens[:, :-1], pos=positions(s.key_mask[:, :-1]), key_mask=s.key_mask[:, :-1],
                   return_hidden=True)  # (B, T, C)
    logprobs = token_logprobs(hidden, model.lm_head.weight, s.tokens[:, 1:])  # (B, T)
    loss, _ = grpo_loss(logprobs, s.logprobs[:, 1:], adv, s.mask[:, 1:])
    loss.backward()
    expected = grads(model)
    for micro_batch in (16, 3):
        passes = train.grpo_update(model, torch.optim.SGD(model.parameters(), lr=0.0), s, adv, None,
                                   dataclasses.replace(cfg, micro_batch=micro_batch), autocast_off())
        torch.testing.assert_close(grads(model), expected, atol=1e-6, rtol=1e-5)
        assert sum(m[2] for m in passes[0][0]).item() == pytest.approx(loss.item(), abs=1e-6)


# ------------------------------------------------------------------------ stale samples (an async trainer's lag)
def test_with_staleness_k_the_sampler_has_the_weights_of_k_steps_before():
    torch.manual_seed(0)
    model, spare = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16)), GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16))
    run, kept = new_run(0, 4), []
    for step in range(6):
        with torch.no_grad():  # the optimizer's step, played by hand: every weight becomes the step number
            for p in model.parameters():
                p.fill_(float(step))
        kept.append({k: v.clone() for k, v in model.state_dict().items()})
        assert train.sampling_policy(model, run, 0, spare) is model  # on-policy: the model itself
        policy = train.sampling_policy(model, run, 2, spare)
        assert policy is spare and len(run["lagged"]) == min(step + 1, 3)
        expected = kept[max(0, step - 2)]  # two steps before; the first steps sample with the starting weights
        assert all(torch.equal(policy.state_dict()[k], expected[k]) for k in expected)


def test_stale_samples_are_off_policy_from_the_first_pass(tmp_path):
    """--staleness=2: from the second step on the sampler lags (one step behind, then two), so the first pass
    already sees rho != 1 and the trainer's log-probs differ from the sampler's; with 0 they agree to rounding."""
    runs = {}
    for k in (0, 2):
        r = run_train(*TINY, f"--out_dir={tmp_path / str(k)}", "--rl_steps=5", "--rl_lr=3e-3", f"--staleness={k}",
                      "--length_weight=0.5",  # a signal even when every answer is wrong: the weights move
                      "--policy_loss=cispo")
        assert r.returncode == 0, r.stderr[-2000:]
        runs[k] = [m for m in read_metrics(tmp_path / str(k)) if m["stage"] == "rl"]
    assert all(m["lp_diff"] < 1e-4 and m["ratio_min"] == pytest.approx(1, abs=1e-4) for m in runs[0])
    assert runs[2][0]["lp_diff"] < 1e-4  # step 1: the lagged weights are the starting ones, the model's too
    assert all(m["lp_diff"] > 1e-3 and m["ratio_max"] > 1 + 1e-3 > 1 - 1e-3 > m["ratio_min"] for m in runs[2][1:])


def test_filter_pool_keeps_the_prompts_at_the_edge_of_the_policys_ability(rl_setup):
    """Right in some but not all of G samples: the others (always or never right) give no signal."""
    model, pool, pool_ids = rl_setup
    cfg = config.Config(group_size=4, max_new_tokens=20)
    kept = train.edge_of_ability(model, pool, pool_ids, cfg)
    assert 0 < len(kept) < len(pool)
    counts = []
    s = sample(model.eval(), pool_ids, 4, 20, cfg.temperature, EOS_ID, generator=torch.Generator().manual_seed(
        cfg.seed + 6), pad_id=PAD_ID)
    grades = grade_samples(s, [p.answer for p in pool for _ in range(4)])[1]
    counts = torch.tensor([g.correct for g in grades]).view(-1, 4).sum(1).tolist()
    assert kept == [i for i, c in enumerate(counts) if 0 < c < 4]
    run = new_run(0, len(pool))
    run["kept"] = kept
    drawn = train.draw_prompts(run, len(pool), config.Config(prompts_per_step=200, group_size=1, max_new_tokens=1))[0]
    assert set(drawn) == set(kept)
