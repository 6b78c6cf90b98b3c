"""bench/claims.py: the grid machinery on a tiny model (pretraining once, settings shared across claims, a failing
setting reported, runs reused), the table's rows and the figures; every claim's verdict on made-up metrics."""
import dataclasses
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("claims", os.path.join(ROOT, "bench", "claims.py"))
claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(claims)

TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--pretrain_steps=3", "--batch_size=8", "--eval_problems=8",
        "--rl_pool=16", "--prompts_per_step=2", "--group_size=4", "--micro_batch=4", "--passk_problems=4",
        "--max_new_tokens=40", "--eval_interval=3", "--warmup_steps=1", "--device=cpu"]
VERDICTS = ("reproduced", "partly reproduced", "not reproduced", "not measured")


def table_rows(md, claim_id):
    return [line for line in md.splitlines() if line.startswith(f"| {claim_id} |")]


def test_the_grid_runs_shares_reuses_and_reports_on_a_tiny_model(tmp_path, monkeypatch):
    monkeypatch.setitem(claims.MEASURE, "quick", dict(batches=3, prompts=4))
    by_id = {c.id: c for c in claims.the_claims()}
    two = dataclasses.replace(by_id[2], settings=by_id[2].settings[:1] + (claims.DEFAULT,), seeds=1)
    broken = dataclasses.replace(by_id[3], id=99, settings=(claims.S("a bad knob", "--advantage=bogus"),))
    chosen = [two, by_id[5], dataclasses.replace(by_id[11], seeds=1), dataclasses.replace(by_id[12], seeds=1), broken]
    work, results = tmp_path / "runs", tmp_path / "results"
    outcomes = claims.run_grid(chosen, steps=2, quick=True, work=work, results=results, extra=TINY)
    md = (results / "claims.md").read_text()

    rows = table_rows(md, 2)  # one row per setting, the verdict on the first
    assert len(rows) == 2 and "--advantage=none" in rows[0] and "GRPO (default)" in rows[1]
    assert any(word in rows[0].split("|")[5] for word in VERDICTS) and rows[1].split("|")[5].strip() == ""
    assert "held-out acc" in rows[0] and "noise/signal" in rows[0]  # the logs' figures and the measured gradient
    assert len(table_rows(md, 12)) == 3 and len(table_rows(md, 11)) == 3
    assert "KL to the start" in table_rows(md, 5)[2] and "thinking vs direct" in table_rows(md, 11)[1]
    bad = table_rows(md, 99)  # a setting train.py refuses: reported, and the grid went on
    assert len(bad) == 1 and "failed" in bad[0] and "--advantage='bogus'" in bad[0] and "not measured" in bad[0]
    for claim_id in (2, 5, 11, 12):
        svg = (results / f"claim{claim_id:02d}.svg").read_text()
        assert svg.startswith("<svg") and svg.count("<polyline") >= 1 and "no data" not in svg
    assert not (results / "claim99.svg").exists()

    # pretrained once; the default GRPO run served claims 2, 5, 11 and 12, the no-baseline run 2 and 12
    dirs = sorted(p.name for p in work.iterdir() if p.is_dir() and p.name != "measures")
    assert [d.split("-")[0] for d in dirs].count("pretrain") == 1 and len(dirs) == 1 + 2 + 2 + 1 + 1
    ei = next(work.glob("ei-*"))
    assert '"stage": "summary"' in (ei / "metrics.jsonl").read_text() and "ei    2 |" in (ei / "log.txt").read_text()
    runs = {name: rs for claim, rs, _ in outcomes if claim.id == 12 for name, rs in rs.items()}
    first_batch = [[r for r in rs[0]["records"] if r.get("stage") == "rl"][0] for rs in runs.values()]
    assert len({(r["reward"], r["response_len"]) for r in first_batch}) == 1  # step 1 draws the same batch for all

    # a second call reuses every run (and the measurement) and writes the same table
    again = claims.run_grid(chosen[:1] + chosen[3:4], steps=2, quick=True, work=work, results=tmp_path / "again",
                            extra=TINY)
    assert all(r["reused"] for _, rs, _ in again for runs_ in rs.values() for r in runs_)
    assert table_rows((tmp_path / "again" / "claims.md").read_text(), 2) == rows


def fake_run(name, seed, steps=10, G=8):
    """Metrics records like train.py's, with every key a verdict reads."""
    h = (sum(map(ord, name)) % 7) / 100 + (seed % 10) / 1000
    rl = [dict(stage="rl", rl_step=s, accuracy=0.3 + 0.05 * s + h, grad_norm=1 + 0.1 * (s % 3) + h,
               zero_signal=0.2 + h, zero_signal_pred=0.15, zero_signal_drawn=0.3, len_wrong=20 + s + 10 * h,
               len_correct=40.0, truncated=0.01, kl=0.01 * s, clip_frac=0.001, ratio_max=1 + h, entropy=0.5 - h,
               format_rate=0.6 + 0.03 * s + h, response_len=30 + s, think_share=0.3 + 0.07 * s)
          for s in range(1, steps + 1)]
    ev = [dict(stage="rl_eval", rl_step=s, acc=0.4 + 0.05 * s + h, **{f"pass@{G}": 0.01, "pass@1": 0.0})
          for s in (0, steps // 2, steps)]
    return dict(argv=[], out_dir=f"/fake/{name}", seed=seed, error=None, wall_s=1.0, reused=True,
                records=ev[:1] + rl + ev[1:] + [dict(stage="summary", corpus_acc=0.69)])


def test_every_claims_verdict_table_rows_and_figure_on_made_up_metrics(tmp_path):
    ctx = claims.SimpleNamespace(size="full", steps=10, seeds=[1337, 1, 2], work=str(tmp_path), command="test")
    outcomes = []
    for claim in claims.the_claims():
        runs = {st.name.format(half=5): [fake_run(st.name, seed) for seed in ctx.seeds[:claim.seeds]]
                for st in claim.settings}
        for name, rs in runs.items():  # the knobs a verdict reads from the command line
            argv = [a.format(half=5, passk=64) for st in claim.settings if st.name.format(half=5) == name
                    for a in st.argv]
            for r in rs:
                r["argv"] = argv
        measured = {
            2: dict({name: dict(noise_to_signal=10.0 - i, cos_rloo=0.9) for i, name in enumerate(runs)}, seed=1337,
                    batches=16),
            5: {name: [dict(kl_token=0.1 / (i + 1), kl_response=3.0 / (i + 1)) for _ in rs]
                for i, (name, rs) in enumerate(runs.items())},
            11: dict(per_seed=[dict(acc_think=0.6, acc_direct=0.3, think_share=0.3)] * len(ctx.seeds)),
        }.get(claim.id, {})
        out = claim.analyse(runs, ctx, measured)
        assert len(out["rows"]) >= len(claim.settings) or claim.id in (1, 11), claim.id
        assert out["verdict"].startswith(VERDICTS), (claim.id, out["verdict"])
        out["figure"] = f"claim{claim.id:02d}.svg"
        claims.write_figure(str(tmp_path / out["figure"]), claim.title, out["panels"])
        assert "<polyline" in (tmp_path / out["figure"]).read_text() or claim.id == 5
        outcomes.append((claim, runs, out))
    claims.write_table(str(tmp_path / "claims.md"), outcomes, ctx, 60.0, [])
    md = (tmp_path / "claims.md").read_text()
    assert [c.id for c in claims.the_claims()] == list(range(1, 13))
    for claim, _, out in outcomes:
        assert len(table_rows(md, claim.id)) == len(out["rows"]) and f"## {claim.id}. " in md


def test_a_format_bonus_for_the_tags_alone_would_pay_junk_that_verify_refuses():
    lines = claims.junk_table()
    assert len(lines) == 2 + len(claims.JUNK)
    paid_and_refused = [line for line in lines[2:] if "| yes | False" in line]
    assert len(paid_and_refused) >= 5  # banana, hedges, expressions, an empty answer, two numbers
    assert "| yes | True (wrong_value) |" in lines[-1]  # one wrong number is formatted under both rules


@pytest.mark.parametrize("argv, message", [(["--only=13"], "names no claim"), (["--ckpt=/nowhere"], "not a file")])
def test_bad_arguments_stop_before_any_work(argv, message, tmp_path):
    with pytest.raises(SystemExit, match=message):
        claims.main(argv + [f"--work={tmp_path}"])
