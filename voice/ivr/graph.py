"""A flow as a diagram: Mermaid text, or a self-made SVG (layered layout, no external tools)."""

from __future__ import annotations

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


def to_svg(flow: Flow) -> str:
    box_w, box_h, gap_x, gap_y = 170, 44, 30, 70
    layers = _layers(flow)
    width = max(len(layer) for layer in layers) * (box_w + gap_x) + gap_x
    height = len(layers) * (box_h + gap_y) + gap_y
    pos: dict[str, tuple[float, float]] = {}
    for row, layer in enumerate(layers):
        offset = (width - len(layer) * (box_w + gap_x) + gap_x) / 2
        for col, name in enumerate(layer):
            pos[name] = (offset + col * (box_w + gap_x), gap_y / 2 + row * (box_h + gap_y))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'font-family="sans-serif" font-size="12">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
           f"<title>{escape(flow.name)}</title>"]
    for name, node in flow.nodes.items():
        x1, y1 = pos[name]
        merged: dict[str, list[str]] = {}  # one arrow per target, its labels joined
        for label, target in node_edges(node):
            merged.setdefault(target, []).extend([label] if label else [])
        for target, labels in merged.items():
            if target not in pos:
                continue
            label = ", ".join(labels)
            x2, y2 = pos[target]
            sx, sy = x1 + box_w / 2, y1 + box_h
            ex, ey = x2 + box_w / 2, y2
            if y2 <= y1:  # back edge (retry loop, menu return): go round the right side
                sx, sy, ex, ey = x1 + box_w, y1 + box_h / 2, x2 + box_w, y2 + box_h / 2
                mid = max(sx, ex) + 30
                path = f"M {sx:.0f} {sy:.0f} C {mid:.0f} {sy:.0f} {mid:.0f} {ey:.0f} {ex:.0f} {ey:.0f}"
                lx, ly = mid, (sy + ey) / 2
            else:
                path = f"M {sx:.0f} {sy:.0f} L {ex:.0f} {ey:.0f}"
                # nearer the target: labels of edges fanning out of one menu would overlap at the source
                lx, ly = sx + 0.7 * (ex - sx), sy + 0.7 * (ey - sy)
            out.append(f'<path d="{path}" fill="none" stroke="#555" marker-end="url(#arrow)"/>')
            if label:
                out.append(f'<text x="{lx:.0f}" y="{ly:.0f}" fill="#333" font-size="10" '
                           f'text-anchor="middle">{escape(label[:28])}</text>')
    for name, node in flow.nodes.items():
        x, y = pos[name]
        fill = {"menu": "#dbeafe", "collect": "#dbeafe", "ask": "#dbeafe", "confirm": "#dbeafe",
                "hangup": "#fee2e2", "transfer": "#dcfce7", "call": "#fef9c3"}.get(node.action, "#f3f4f6")
        stroke = "#111" if name == flow.start else "#888"
        out.append(f'<rect x="{x:.0f}" y="{y:.0f}" width="{box_w}" height="{box_h}" rx="8" fill="{fill}" '
                   f'stroke="{stroke}"/>')
        first, second = _label(flow, name).split("\n")
        out.append(f'<text x="{x + box_w / 2:.0f}" y="{y + 18:.0f}" text-anchor="middle" '
                   f'font-weight="bold">{escape(first)}</text>')
        out.append(f'<text x="{x + box_w / 2:.0f}" y="{y + 34:.0f}" text-anchor="middle" '
                   f'fill="#555">{escape(second)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
