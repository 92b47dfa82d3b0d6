"""Small SVG charts drawn on the server (no chart library, nothing from a CDN)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

PALETTE = ("#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c")


def bar_chart(categories: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], *,
              title: str, width: int = 640, height: int = 240) -> str:
    """Grouped bars: one group per category, one bar per series, with a legend and a y axis."""
    left, bottom, top = 40, 36, 28
    plot_w, plot_h = width - left - 10, height - top - bottom
    peak = max((v for _, values in series for v in values), default=0) or 1
    group = plot_w / max(1, len(categories))
    bar = max(2.0, (group - 8) / max(1, len(series)))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'font-family="sans-serif" font-size="11" class="chart"><title>{escape(title)}</title>',
           f'<text x="{left}" y="16" font-weight="bold">{escape(title)}</text>']
    for i in range(5):  # y axis: 0, 25, 50, 75, 100 % of the peak
        y = top + plot_h - plot_h * i / 4
        out.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#6b7280">'
                   f'{peak * i / 4:.3g}</text>')
    for c, category in enumerate(categories):
        x0 = left + c * group + 4
        for s, (name, values) in enumerate(series):
            value = values[c] if c < len(values) else 0
            h = plot_h * value / peak
            out.append(f'<rect x="{x0 + s * bar:.1f}" y="{top + plot_h - h:.1f}" width="{bar - 1:.1f}" '
                       f'height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}"><title>{escape(name)} '
                       f'{escape(category)}: {value:g}</title></rect>')
        out.append(f'<text x="{x0 + group / 2 - 4:.1f}" y="{height - bottom + 14}" text-anchor="middle" '
                   f'fill="#374151">{escape(category)}</text>')
    lx = left
    for s, (name, _) in enumerate(series):
        colour = PALETTE[s % len(PALETTE)]
        out.append(f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{lx + 14}" y="{height - 5}">{escape(name)}</text>')
        lx += 24 + 7 * len(name)
    out.append("</svg>")
    return "\n".join(out) + "\n"
