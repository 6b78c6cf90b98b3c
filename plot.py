"""
plot.py: turn a run's metrics.jsonl into an SVG figure: reward, accuracy, response length and think share
against the RL step. Hand-written SVG, so the project needs no plotting library.

`mode_figure` draws the thinking-budget curve of a --thinking=fusion run (train.py writes it to out_dir/modes.svg).

Run: `python plot.py out/metrics.jsonl out/rl.svg`
"""
import json
import sys

PANELS = [  # (metric key in the RL step records, title)
    ("reward", "mean reward"),
    ("accuracy", "sampled accuracy"),
    ("response_len", "response length (tokens)"),
    ("think_share", "share of responses that think"),
]
OPTIONAL = [  # drawn when the run logged them
    ("unexpanded", "share answering unexpanded (the echo)"),  # a poly run
    ("mode_violations", "share breaking its /think or /no_think flag"),  # --thinking=fusion
]
W, H, PAD = 300, 190, 36  # one panel's size in pixels, and its margin


def panel(x0, y0, title, xs, ys, evals=()):
    """One line chart as SVG elements; evals: optional (step, value) points of the greedy held-out eval."""
    lo, hi = min(ys + [v for _, v in evals]), max(ys + [v for _, v in evals])
    hi = hi if hi > lo else lo + 1
    first, last = min(xs + [x for x, _ in evals]), max(xs + [x for x, _ in evals])
    sx = lambda x: x0 + PAD + (x - first) / max(1, last - first) * (W - 1.5 * PAD)
    sy = lambda y: y0 + H - PAD + (lo - y) / (hi - lo) * (H - 1.7 * PAD)
    pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
    out = [f'<text x="{x0 + W / 2}" y="{y0 + 16}" text-anchor="middle" font-size="13">{title}</text>',
           f'<rect x="{x0 + PAD}" y="{y0 + 0.7 * PAD}" width="{W - 1.5 * PAD}" height="{H - 1.7 * PAD}" '
           'fill="none" stroke="#999"/>',
           f'<polyline points="{pts}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>']
    out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="#d62728"/>' for x, y in evals]
    for v in (lo, hi):
        out.append(f'<text x="{x0 + PAD - 4}" y="{sy(v) + 4:.1f}" text-anchor="end" font-size="10">{v:.2f}</text>')
    for x in (first, last):
        out.append(f'<text x="{sx(x):.1f}" y="{y0 + H - PAD + 14}" text-anchor="middle" font-size="10">{x}</text>')
    return out


def mode_figure(before, after, dst):
    """Thinking-mode fusion's latency/accuracy curve: held-out accuracy against the think tokens actually used, in
    /think mode under each budget (the line, labelled with the budget) and in /no_think mode (the square), before
    and after RL. before, after: evaluation.mode_sweep's rows."""
    w, h, pad = 460, 320, 48
    x_hi = max(r["think_len"] for r in before + after) or 1
    sx = lambda x: pad + x / x_hi * (w - 1.5 * pad)
    sy = lambda y: h - pad + y * -(h - 1.8 * pad)
    out = [f'<rect x="{pad}" y="{0.8 * pad}" width="{w - 1.5 * pad}" height="{h - 1.8 * pad}" fill="none" '
           'stroke="#999"/>',
           f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="13">held-out accuracy vs think tokens '
           'used</text>',
           f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle" font-size="11">mean think tokens per response '
           '(/think under budgets 0, 2, 4, ... , none; the square: /no_think)</text>']
    for v in (0, 0.5, 1):
        out.append(f'<text x="{pad - 4}" y="{sy(v) + 4:.1f}" text-anchor="end" font-size="10">{v:.1f}</text>')
    for x in (0, x_hi):
        out.append(f'<text x="{sx(x):.1f}" y="{h - pad + 14}" text-anchor="middle" font-size="10">{x:.0f}</text>')
    for i, (rows, color, name) in enumerate(((before, "#999999", "before RL"), (after, "#1f77b4", "after RL"))):
        think = [r for r in rows if r["mode"] == "think"]
        pts = " ".join(f"{sx(r['think_len']):.1f},{sy(r['acc']):.1f}" for r in think)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        for r in think:
            out.append(f'<circle cx="{sx(r["think_len"]):.1f}" cy="{sy(r["acc"]):.1f}" r="3" fill="{color}"/>')
            label = "none" if r["budget"] is None else r["budget"]
            out.append(f'<text x="{sx(r["think_len"]) + 4:.1f}" y="{sy(r["acc"]) - 5:.1f}" font-size="9" '
                       f'fill="{color}">{label}</text>')
        for r in rows:
            if r["mode"] == "no_think":
                out.append(f'<rect x="{sx(r["think_len"]) - 4:.1f}" y="{sy(r["acc"]) - 4:.1f}" width="8" height="8" '
                           f'fill="none" stroke="{color}" stroke-width="1.5"/>')
        out.append(f'<text x="{w - pad}" y="{h - pad - 10 - 14 * i}" text-anchor="end" font-size="11" '
                   f'fill="{color}">{name}</text>')
    with open(dst, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">'
                '<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(out) + "\n</svg>\n")
    print(f"wrote {dst}")


def main(src, dst):
    records = [json.loads(line) for line in open(src)]
    steps = [r for r in records if r.get("stage") == "rl"]
    evals = [r for r in records if r.get("stage") == "rl_eval"]
    if not steps:
        sys.exit(f"error: {src} has no RL step records (stage 'rl'): did the run reach RL?")
    xs = [r["rl_step"] for r in steps]
    panels = PANELS + [p for p in OPTIONAL if p[0] in steps[0]]
    rows = -(-len(panels) // 2)
    body = []
    for i, (key, title) in enumerate(panels):
        ev = [(r["rl_step"], r[key if key != "accuracy" else "acc"]) for r in evals
              if (key if key != "accuracy" else "acc") in r]
        body += panel((i % 2) * W, (i // 2) * H, title, xs, [r[key] for r in steps], ev)
    body.append(f'<text x="{W}" y="{rows * H + 14}" text-anchor="middle" font-size="11">RL step '
                '(blue: sampled batch; red dots: greedy held-out eval)</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{rows * H + 22}" '
           f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")
    with open(dst, "w") as f:
        f.write(svg)
    print(f"wrote {dst} ({len(steps)} RL steps, {len(evals)} evals)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python plot.py out/metrics.jsonl out/rl.svg")
    main(*sys.argv[1:])
