"""A flow as a diagram: Mermaid text, or a self-made SVG (layered layout, no external tools)."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from voice.ivr.model import Flow
from voice.ivr.validate import node_edges


def _label(flow: Flow, name: str) -> str:
    node = flow.nodes[name]
    extra = f" {node.args['flow']}" if node.action == "call" else ""
    return f"{name}\n({node.action}{extra})"


def to_mermaid(flow: Flow) -> str:
    lines = ["flowchart TD", f'    START(("start")) --> {flow.start}']
    for name, node in flow.nodes.items():
        shape = ('(["', '"])') if node.action in ("hangup", "transfer", "return") else ('["', '"]')
        text = _label(flow, name).replace("\n", "<br/>").replace('"', "#quot;")
        lines.append(f"    {name}{shape[0]}{text}{shape[1]}")
    for name, node in flow.nodes.items():
        for label, target in node_edges(node):
            label = label.replace('"', "#quot;").replace("|", "/")
            arrow = f'-- "{label}" -->' if label else "-->"
            lines.append(f"    {name} {arrow} {target}")
    return "\n".join(lines) + "\n"


def _layers(flow: Flow) -> list[list[str]]:
    """Breadth-first depth from the start node; unreachable nodes go last."""
    depth = {flow.start: 0}
    order = [flow.start]
    for name in order:
        for _, t in node_edges(flow.nodes[name]):
            if t in flow.nodes and t not in depth:
                depth[t] = depth[name] + 1
                order.append(t)
    last = max(depth.values(), default=0) + 1
    layers: list[list[str]] = [[] for _ in range(last + 1)]
    for name in flow.nodes:
        layers[depth.get(name, last)].append(name)
    return [layer for layer in layers if layer]


def _wrap(text: str, width: int = 26) -> list[str]:
    """Break a label at spaces/commas into lines of about `width` characters (never cut)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def _text_lines(x: float, y: float, lines: list[str], anchor: str, cls: str = "") -> str:
    """Multi-line text with a white halo, so a label stays legible where it crosses a line."""
    spans = "".join(f'<tspan x="{x:.0f}" dy="{0 if i == 0 else 12}">{escape(line)}</tspan>'
                    for i, line in enumerate(lines))
    extra = f' class="{cls}"' if cls else ""
    return (f'<text x="{x:.0f}" y="{y:.0f}" fill="#333" font-size="10" text-anchor="{anchor}" '
            f'stroke="#fff" stroke-width="3" paint-order="stroke"{extra}>{spans}</text>')


def to_svg(flow: Flow, *, counts: Mapping[str, Mapping[str, int]] | None = None,
           live: Mapping[str, int] | None = None) -> str:
    """The flow as an SVG: one box per node in layers from the start node.

    Edges never pass behind a box: an edge to the next layer is a straight line through the gap
    between the layers; an edge that skips layers runs down a lane left of every box, a back edge
    (retry loop, menu return) up a lane on the right, both entering boxes through the gaps.
    `counts` ({node: {"reached": n, "left": m}}) adds how many calls reached each node and ended
    there; `live` ({node: calls}) highlights the nodes where calls are now.
    """
    box_w, gap_x, gap_y, lane_w = 170, 30, 80, 14
    box_h = 58 if counts is not None else 44
    layers = _layers(flow)
    row_of = {name: r for r, layer in enumerate(layers) for name in layer}
    merged: dict[str, dict[str, list[str]]] = {}  # one arrow per (source, target), labels joined
    for name, node in flow.nodes.items():
        for label, target in node_edges(node):
            if target in flow.nodes:
                merged.setdefault(name, {}).setdefault(target, []).extend([label] if label else [])
    edges = [(a, b, ", ".join(labels)) for a, targets in merged.items() for b, labels in targets.items()]
    skips = [e for e in edges if row_of[e[1]] > row_of[e[0]] + 1]
    backs = [e for e in edges if row_of[e[1]] <= row_of[e[0]]]
    left = 20 + lane_w * len(skips) + (60 if skips else 0)
    right = 20 + lane_w * len(backs) + (60 if backs else 0)
    inner = max(len(layer) for layer in layers) * (box_w + gap_x) - gap_x
    width = left + inner + right
    height = len(layers) * (box_h + gap_y) + gap_y
    pos: dict[str, tuple[float, float]] = {}
    for r, layer in enumerate(layers):
        offset = left + (inner - (len(layer) * (box_w + gap_x) - gap_x)) / 2
        for col, name in enumerate(layer):
            pos[name] = (offset + col * (box_w + gap_x), gap_y / 2 + r * (box_h + gap_y))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'font-family="sans-serif" font-size="12">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
           f"<title>{escape(flow.name)}</title>"]
    # Boxes first, edges after: nothing is hidden behind a box, and no edge crosses one.
    for name, node in flow.nodes.items():
        x, y = pos[name]
        fill = {"menu": "#dbeafe", "collect": "#dbeafe", "ask": "#dbeafe", "confirm": "#dbeafe",
                "hangup": "#fee2e2", "transfer": "#dcfce7", "call": "#fef9c3"}.get(node.action, "#f3f4f6")
        here = (live or {}).get(name, 0)
        stroke = ' stroke="#ea580c" stroke-width="4"' if here else (
            ' stroke="#111"' if name == flow.start else ' stroke="#888"')
        cls = ' class="node live"' if here else ' class="node"'
        out.append(f'<g{cls} data-node="{escape(name)}"><rect x="{x:.0f}" y="{y:.0f}" width="{box_w}" '
                   f'height="{box_h}" rx="8" fill="{fill}"{stroke}/>')
        first, second = _label(flow, name).split("\n")
        out.append(f'<text x="{x + box_w / 2:.0f}" y="{y + 18:.0f}" text-anchor="middle" '
                   f'font-weight="bold">{escape(first)}</text>')
        out.append(f'<text x="{x + box_w / 2:.0f}" y="{y + 34:.0f}" text-anchor="middle" '
                   f'fill="#555">{escape(second)}</text>')
        if counts is not None:
            c = counts.get(name, {})
            out.append(f'<text class="reach" x="{x + box_w / 2:.0f}" y="{y + 50:.0f}" text-anchor="middle" '
                       f'font-size="10" fill="#1e3a8a">reached {c.get("reached", 0)} · left '
                       f'{c.get("left", 0)}</text>')
        if here:
            out.append(f'<circle cx="{x + box_w:.0f}" cy="{y:.0f}" r="10" fill="#ea580c"/>'
                       f'<text x="{x + box_w:.0f}" y="{y + 4:.0f}" text-anchor="middle" font-size="11" '
                       f'fill="#fff" font-weight="bold">{here}</text>')
        out.append("</g>")
    lane = {"skip": 0, "back": 0}
    tx: float
    ty: float
    for a, b, label in edges:
        (x1, y1), (x2, y2) = pos[a], pos[b]
        sx, sy, ex, ey = x1 + box_w / 2, y1 + box_h, x2 + box_w / 2, y2
        if (a, b, label) in skips or (a, b, label) in backs:
            kind = "skip" if (a, b, label) in skips else "back"
            i = lane[kind]
            lane[kind] += 1
            lx = left - 20 - i * lane_w if kind == "skip" else left + inner + 20 + i * lane_w
            below = sy + 12 + (i % 4) * 6  # in the gap under the source
            above = ey - 12 - (i % 4) * 6  # in the gap over the target
            path = (f"M {sx:.0f} {sy:.0f} L {sx:.0f} {below:.0f} L {lx:.0f} {below:.0f} "
                    f"L {lx:.0f} {above:.0f} L {ex:.0f} {above:.0f} L {ex:.0f} {ey:.0f}")
            tx, ty, anchor = (lx - 4, (below + above) / 2, "end") if kind == "skip" else (
                lx + 4, (below + above) / 2, "start")
        else:
            path = f"M {sx:.0f} {sy:.0f} L {ex:.0f} {ey:.0f}"
            # nearer the target: labels of edges fanning out of one menu would overlap at the source
            tx, ty, anchor = sx + 0.65 * (ex - sx), sy + 0.65 * (ey - sy), "middle"
        out.append(f'<path d="{path}" fill="none" stroke="#555" marker-end="url(#arrow)"/>')
        if label:
            out.append(_text_lines(tx, ty, _wrap(label), anchor, "edge-label"))
    out.append("</svg>")
    return "\n".join(out) + "\n"
