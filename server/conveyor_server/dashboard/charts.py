"""Inline SVG graphs, rendered on the server from a queue's recorded History window. Every
number placed in the markup is formatted here; no text from jobs reaches it (queue names are
escaped by the template around it)."""

from __future__ import annotations

from conveyor_server.observability.history import FLOW_SERIES, LOG_BUCKET_BOUNDS, Window

WIDTH, HEIGHT = 640, 200
LEFT, BOTTOM, TOP, RIGHT = 44, 24, 12, 12


def _seconds_label(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.3g}ms"
    if seconds < 120:
        return f"{seconds:.2g}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _frame(kind: str, points: int, body: list[str], label: str) -> str:
    return (
        f'<svg class="chart chart-{kind}" data-points="{points}" role="img" '
        f'aria-label="{label}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
        f'y2="{HEIGHT - BOTTOM}"/>'
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"/>'
        + "".join(body)
        + "</svg>"
    )


def flow_chart(window: Window) -> str:
    """Started, finished, errors and timeouts per minute: one line each, a dot per non-zero
    minute (data-points counts the dots)."""
    n = len(window.flow)
    peak = max([1] + [minute[s] for minute in window.flow for s in FLOW_SERIES])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: int) -> float:
        return HEIGHT - BOTTOM - plot_h * v / peak

    body = [
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{peak}</text>',
        f'<text class="tick" x="{LEFT - 4}" y="{HEIGHT - BOTTOM}" text-anchor="end">0</text>',
        f'<text class="tick" x="{LEFT}" y="{HEIGHT - 6}">-{n}m</text>',
        f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">now</text>',
    ]
    for i, series in enumerate(FLOW_SERIES):
        body.append(
            f'<text class="legend s-{series}" x="{WIDTH - RIGHT - 70 * (len(FLOW_SERIES) - i)}" '
            f'y="{TOP + 4}">{series}</text>'
        )
    dots = 0
    for series in FLOW_SERIES:
        coords = " ".join(f"{x(i):.1f},{y(m[series]):.1f}" for i, m in enumerate(window.flow))
        body.append(f'<polyline class="line s-{series}" points="{coords}"/>')
        for i, minute in enumerate(window.flow):
            if minute[series]:
                dots += 1
                body.append(
                    f'<circle class="dot s-{series}" cx="{x(i):.1f}" cy="{y(minute[series]):.1f}" '
                    f'r="2.5"><title>{series}: {minute[series]}</title></circle>'
                )
    return _frame("flow", dots, body, "task flow per minute")


def histogram_chart(kind: str, buckets: list[int]) -> str:
    """A duration distribution on a log scale: one bar per power-of-two bucket."""
    n = len(buckets)
    peak = max([1, *buckets])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bar_w = plot_w / n
    body = [
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{peak}</text>',
        f'<text class="tick" x="{LEFT - 4}" y="{HEIGHT - BOTTOM}" text-anchor="end">0</text>',
    ]
    bars = 0
    for i, count in enumerate(buckets):
        bound = LOG_BUCKET_BOUNDS[i] if i < len(LOG_BUCKET_BOUNDS) else None
        label = f"≤ {_seconds_label(bound)}" if bound is not None else "longer"
        if i % 4 == 0 and bound is not None:
            body.append(
                f'<text class="tick" x="{LEFT + bar_w * i:.1f}" y="{HEIGHT - 6}">'
                f"{_seconds_label(bound)}</text>"
            )
        if count:
            bars += 1
            h = plot_h * count / peak
            body.append(
                f'<rect class="bar" x="{LEFT + bar_w * i + 1:.1f}" y="{HEIGHT - BOTTOM - h:.1f}" '
                f'width="{bar_w - 2:.1f}" height="{h:.1f}"><title>{label}: {count}</title></rect>'
            )
    return _frame(kind, bars, body, f"{kind} time distribution, log scale")
