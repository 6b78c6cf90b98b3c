"""
plot.py: turn a run's metrics.jsonl into an SVG figure: reward, accuracy, response length and think share
against the RL step. Hand-written SVG, so the project needs no plotting library.

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


def main(src, dst):
    records = [json.loads(line) for line in open(src)]
    steps = [r for r in records if r.get("stage") == "rl"]
    evals = [r for r in records if r.get("stage") == "rl_eval"]
    if not steps:
        sys.exit(f"error: {src} has no RL step records (stage 'rl'): did the run reach RL?")
    xs = [r["rl_step"] for r in steps]
    body = []
    for i, (key, title) in enumerate(PANELS):
        ev = [(r["rl_step"], r[key if key != "accuracy" else "acc"]) for r in evals
              if (key if key != "accuracy" else "acc") in r]
        body += panel((i % 2) * W, (i // 2) * H, title, xs, [r[key] for r in steps], ev)
    body.append(f'<text x="{W}" y="{2 * H + 14}" text-anchor="middle" font-size="11">RL step '
                '(blue: sampled batch; red dots: greedy held-out eval)</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{2 * H + 22}" '
           f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")
    with open(dst, "w") as f:
        f.write(svg)
    print(f"wrote {dst} ({len(steps)} RL steps, {len(evals)} evals)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python plot.py out/metrics.jsonl out/rl.svg")
    main(*sys.argv[1:])
