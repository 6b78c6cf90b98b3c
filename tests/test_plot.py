"""plot.py turns metrics.jsonl into an SVG: one line per panel, one dot per held-out eval."""
import json

import pytest

import plot


def test_svg_has_a_line_per_panel_and_a_dot_per_eval(tmp_path):
    rows = [dict(stage="rl_eval", rl_step=0, acc=0.4, think_share=0.2, response_len=18.0)]
    rows += [dict(stage="rl", rl_step=i, reward=i / 10, acc=i / 10, response_len=20 + i, think_share=i / 10)
             for i in range(1, 6)]
    rows += [dict(stage="rl_eval", rl_step=5, acc=0.9, think_share=1.0, response_len=30.0)]
    src, dst = tmp_path / "m.jsonl", tmp_path / "f.svg"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    plot.main(src, dst)
    svg = dst.read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 4  # reward, accuracy, length, think share
    assert svg.count("<circle") == 3 * 2  # accuracy, length, think share: two evals each; reward has none


def test_a_run_without_rl_steps_is_refused_clearly(tmp_path):
    src = tmp_path / "m.jsonl"
    src.write_text(json.dumps(dict(stage="pretrain", step=1, loss=1.0)))
    with pytest.raises(SystemExit, match="no RL step records"):
        plot.main(src, tmp_path / "f.svg")


def test_a_logged_optional_metric_gets_its_own_panel_and_the_figure_grows(tmp_path):
    rows = [dict(stage="rl", rl_step=i, reward=0.5, acc=0.5, response_len=20, think_share=0.5,
                 unexpanded=i / 10) for i in range(1, 4)]
    src, dst = tmp_path / "m.jsonl", tmp_path / "f.svg"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    plot.main(src, dst)
    svg = dst.read_text()
    assert svg.count("<polyline") == 5 and "the echo" in svg
    assert f'height="{30 + 3 * (plot.H + 2 * 15 + 10)}"' in svg  # five charts in rows of two: a third row


def test_the_mode_figure_draws_both_curves_with_budget_labels(tmp_path):
    rows = lambda acc: [dict(mode="no_think", budget=None, acc=0.4, think_share=0.0, think_len=0.0)] + [
        dict(mode="think", budget=n, acc=acc * (i + 1) / 3, think_share=1.0, think_len=float(n or 30))
        for i, n in enumerate((0, 8, None))]
    plot.mode_figure(rows(0.6), rows(0.9), tmp_path / "modes.svg")
    svg = (tmp_path / "modes.svg").read_text()
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 2  # /think lines, a /no_think dot each
    assert ">none<" in svg and ">8<" in svg and "before RL" in svg and "after RL" in svg
