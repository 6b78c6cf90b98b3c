"""
plot.py: line charts as hand-written SVG, so the project needs no plotting library. One function draws a chart
(`chart`: series of points, lines or dots, a legend), one lays charts out in a figure (`figure`); the rest say what
to draw: a run's RL curves from its metrics.jsonl (`main`: reward, accuracy, response length and think share
against the RL step), and the thinking-budget curve of a --thinking=fusion run (`mode_figure`, which train.py
writes to out_dir/modes.svg). bench/claims.py draws its figures with the same two functions.

Run: `python plot.py out/metrics.jsonl out/rl.svg`
"""
import html
import json
import math
import sys

W, H, PAD = 360, 240, 46  # one chart's size in pixels, and its margin
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")


def chart(x0, y0, title, series, x_label="RL step"):
    """One line chart at (x0, y0) as SVG elements. series: dicts of label, pts [(x, y)], and optionally color,
    dash (a dashed line), dots (dots, no line) and labels (a text beside each point); points whose y is None or
    not finite are left out."""
    cut = title.rfind(" ", 0, 56) if len(title) > 56 else -1  # two lines where one would run into the next chart
    out = [f'<text x="{x0 + W / 2}" y="{y0 + 12 + 12 * i}" text-anchor="middle" font-size="11">{html.escape(t)}'
           '</text>' for i, t in enumerate([title] if cut < 0 else [title[:cut], title[cut + 1:]])]
    good = [[(x, y) for x, y in s["pts"] if y is not None and math.isfinite(y)] for s in series]
    pts = [p for g in good for p in g]
    if not pts:
        return out + [f'<text x="{x0 + W / 2}" y="{y0 + H / 2}" text-anchor="middle" font-size="11">no data</text>']
    xlo, xhi = min(x for x, _ in pts), max(x for x, _ in pts)
    ylo, yhi = min(y for _, y in pts), max(y for _, y in pts)
    xhi, yhi = (xhi if xhi > xlo else xlo + 1), (yhi if yhi > ylo else ylo + abs(ylo) * 0.1 + 0.1)
    ylo, yhi = ylo - 0.05 * (yhi - ylo), yhi + 0.05 * (yhi - ylo)
    sx = lambda x: x0 + PAD + (x - xlo) / (xhi - xlo) * (W - 1.4 * PAD)  # noqa: E731
    sy = lambda y: y0 + H - PAD + (ylo - y) / (yhi - ylo) * (H - 1.6 * PAD)  # noqa: E731
    out.append(f'<rect x="{x0 + PAD}" y="{y0 + 0.6 * PAD}" width="{W - 1.4 * PAD}" height="{H - 1.6 * PAD}" '
               'fill="none" stroke="#999"/>')
    out += [f'<text x="{x0 + PAD - 4}" y="{sy(v) + 4:.1f}" text-anchor="end" font-size="10">{v:.3g}</text>'
            for v in (ylo, (ylo + yhi) / 2, yhi)]
    out += [f'<text x="{sx(v):.1f}" y="{y0 + H - PAD + 14}" text-anchor="middle" font-size="10">{v:g}</text>'
            for v in (xlo, xhi)]
    out.append(f'<text x="{x0 + PAD + (W - 1.4 * PAD) / 2}" y="{y0 + H - PAD + 28}" text-anchor="middle" '
               f'font-size="10">{html.escape(x_label)}</text>')
    for i, (s, g) in enumerate(zip(series, good)):
        color, dash = s.get("color", PALETTE[i % len(PALETTE)]), ' stroke-dasharray="5,3"' if s.get("dash") else ""
        if len(g) > 1 and not s.get("dots"):
            out.append(f'<polyline points="{" ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in g)}" fill="none" '
                       f'stroke="{color}" stroke-width="1.5"{dash}/>')
        if s.get("dots") or len(g) == 1:
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{color}"/>' for x, y in g]
        out += [f'<text x="{sx(x) + 4:.1f}" y="{sy(y) - 5:.1f}" font-size="9" fill="{color}">{html.escape(str(t))}'
                '</text>' for (x, y), t in zip(s["pts"], s.get("labels", ())) if y is not None]
        ly = y0 + H + 15 * i
        out.append(f'<line x1="{x0 + PAD}" y1="{ly - 4}" x2="{x0 + PAD + 18}" y2="{ly - 4}" stroke="{color}" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{x0 + PAD + 24}" y="{ly}" font-size="10">{html.escape(s["label"])}</text>')
    return out


def figure(path, title, charts, columns=3):
    """Charts (dicts of chart()'s arguments: title, series, x_label) in rows of `columns`, in one SVG file."""
    legend = max(len(c["series"]) for c in charts)
    cols, rows = min(columns, len(charts)), -(-len(charts) // columns)
    w, h = W * cols, 30 + (H + 15 * legend + 10) * rows
    body = [f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="14">{html.escape(title)}</text>']
    for k, c in enumerate(charts):
        body += chart((k % columns) * W, 30 + (k // columns) * (H + 15 * legend + 10), **c)
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">'
                '<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")
    print(f"wrote {path}")


def mode_figure(before, after, path):
    """Thinking-mode fusion's latency/accuracy curve: held-out accuracy against the think tokens actually used, in
    /think mode under each budget (the lines, each point labelled with its budget) and in /no_think mode (the
    dots), before and after RL. before, after: evaluation.mode_sweep's rows."""
    series = []
    for rows, color, name in ((before, "#999999", "before RL"), (after, "#1f77b4", "after RL")):
        think = [r for r in rows if r["mode"] == "think"]
        series.append(dict(label=f"/think under a budget, {name}", color=color, pts=[(r["think_len"], r["acc"])
                           for r in think], labels=["none" if r["budget"] is None else r["budget"] for r in think]))
        series.append(dict(label=f"/no_think, {name}", color=color, dots=True,
                           pts=[(r["think_len"], r["acc"]) for r in rows if r["mode"] == "no_think"]))
    figure(path, "held-out accuracy vs think tokens used", [dict(title="greedy accuracy", series=series,
                                                                  x_label="mean think tokens per response")])


PANELS = [("reward", "mean reward"), ("acc", "sampled accuracy"), ("response_len", "response length (tokens)"),
          ("think_share", "share of responses that think"),
          ("unexpanded", "share answering unexpanded (the echo)"),  # a poly run
          ("mode_violations", "share breaking its /think or /no_think flag")]  # --thinking=fusion


def main(src, dst):
    records = [json.loads(line) for line in open(src)]
    steps = [r for r in records if r.get("stage") == "rl"]
    evals = [r for r in records if r.get("stage") == "rl_eval"]
    if not steps:
        sys.exit(f"error: {src} has no RL step records (stage 'rl'): did the run reach RL?")
    charts = [dict(title=title, series=[dict(label="sampled batch", pts=[(r["rl_step"], r[key]) for r in steps]),
                                        dict(label="greedy held-out eval", dots=True, color=PALETTE[1],
                                             pts=[(r["rl_step"], r[key]) for r in evals if key in r])])
              for key, title in PANELS if key in steps[0]]
    figure(dst, f"{len(steps)} RL steps, {len(evals)} held-out evaluations", charts, columns=2)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python plot.py out/metrics.jsonl out/rl.svg")
    main(*sys.argv[1:])
