"""Small SVG charts the tabs show where Gradio's own plots fall short (intervals around a point)."""
from __future__ import annotations

import html
import math


def nice_ticks(low: float, high: float, target: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 × 10^k apart) covering [low, high]."""
    if high <= low:
        low, high = low - 1, high + 1
    raw = (high - low) / max(target - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(power * m for m in (1, 2, 5, 10) if power * m >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


def interval_chart(rows: list[dict], title: str = "Rating with 95% interval", width: int = 720) -> str:
    """A horizontal chart: one line per model from ci_low to ci_high with a dot at its rating, best on top, with a
    labelled rating axis. `rows` are dicts with model, rating, ci_low, ci_high, votes."""
    if not rows:
        return "<div class='interval-chart-empty'>No votes yet: the chart appears after the first vote.</div>"
    label_w, right_pad, row_h, top, bottom = 230, 24, 30, 34, 42
    height = top + row_h * len(rows) + bottom
    ticks = nice_ticks(min(r["ci_low"] for r in rows), max(r["ci_high"] for r in rows))
    lo, hi = ticks[0], ticks[-1]
    plot_w = width - label_w - right_pad

    def x(value: float) -> float:
        return label_w + (value - lo) / (hi - lo) * plot_w

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' width='100%' "
             f"style='max-width:{width}px;font:13px ui-sans-serif,system-ui,sans-serif' role='img' "
             f"aria-label='{html.escape(title)}'>",
             f"<text x='{label_w}' y='18' font-weight='600' fill='currentColor'>{html.escape(title)}</text>"]
    axis_y = top + row_h * len(rows)
    for tick in ticks:
        tx = x(tick)
        parts.append(f"<line x1='{tx:.1f}' y1='{top - 6}' x2='{tx:.1f}' y2='{axis_y}' stroke='#9ca3af' "
                     "stroke-opacity='.35'/>")
        parts.append(f"<text x='{tx:.1f}' y='{axis_y + 16}' text-anchor='middle' fill='currentColor'>"
                     f"{tick:g}</text>")
    parts.append(f"<line x1='{label_w}' y1='{axis_y}' x2='{width - right_pad}' y2='{axis_y}' stroke='#6b7280'/>")
    parts.append(f"<text x='{label_w + plot_w / 2:.1f}' y='{axis_y + 34}' text-anchor='middle' "
                 "fill='currentColor'>rating (Bradley–Terry, Elo scale; 95% interval)</text>")
    for i, row in enumerate(rows):
        cy = top + row_h * i + row_h / 2
        name = row["model"] if len(row["model"]) <= 30 else "…" + row["model"][-29:]
        parts.append(f"<text x='{label_w - 10}' y='{cy + 4:.1f}' text-anchor='end' fill='currentColor'>"
                     f"{html.escape(name)}</text>")
        parts.append(f"<line x1='{x(row['ci_low']):.1f}' y1='{cy:.1f}' x2='{x(row['ci_high']):.1f}' y2='{cy:.1f}' "
                     "stroke='#6366f1' stroke-width='3' stroke-linecap='round'/>")
        parts.append(f"<circle cx='{x(row['rating']):.1f}' cy='{cy:.1f}' r='5.5' fill='#4338ca'/>")
        parts.append(f"<text x='{x(row['rating']):.1f}' y='{cy - 8:.1f}' text-anchor='middle' font-size='11' "
                     f"fill='currentColor'>{row['rating']:.0f}</text>")
    parts.append("</svg>")
    return "".join(parts)
