"""Figures for results and the leaderboard: learning curves, Self vs Others, the cost plot, per-client bars,
relevance heatmaps.

Every number plotted comes from ``drake.results.seed_summaries`` (so from ``drake.metrics``); scores are drawn
in percent, the unit the tables print. Every PNG is byte-for-byte reproducible: Agg backend, fixed size and
dpi, no software/date metadata, atomic write. Point labels are placed by ``place_labels`` so that no two
labels (and no label and a marker) overlap, however close the methods score.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator  # noqa: E402

from drake.errors import DataError  # noqa: E402
from drake.io import atomic_write_bytes  # noqa: E402
from drake.metrics import summarize  # noqa: E402
from drake.results import seed_summaries  # noqa: E402

DPI = 100
PCT = 100.0  # scores are fractions in records and percent on every axis, as in the tables
MIB = float(1 << 20)
TARGETS = (("self", "Self (own tasks)"), ("others", "Others (other clients' tasks)"))
LABEL_GID = "point-label"  # every label placed by place_labels carries it (tests find them by it)
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "D", "v", "P", "X")


def _save(fig: Any, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _label(record: Mapping[str, Any]) -> str:
    info = record["run_info"]
    return f"{info['method']['name']} ({info['scenario']['name']}/{info['scenario']['pool']})"


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def style(i: int) -> dict[str, str]:
    """The i-th method's colour, line style and marker: ten colours, then the next line style (so fifteen
    methods never share a look); one index per method keeps its look the same across a table's plots."""
    return {"color": f"C{i % 10}", "linestyle": _LINESTYLES[(i // 10) % len(_LINESTYLES)],
            "marker": _MARKERS[(i // 10) % len(_MARKERS)]}  # fmt: skip


# ------------------------------------------------------------------------------------- label placement

_DIRECTIONS = tuple(
    (math.cos(math.radians(a)), math.sin(math.radians(a)))
    for a in (45, 0, 135, 180, 90, 270, 315, 225, 22.5, 157.5, 202.5, 337.5, 67.5, 112.5, 247.5, 292.5)
)
_RADII_PX = (5, 12, 22, 34, 48, 64, 82, 102, 124, 148, 174, 202, 232, 264)
_LEADER_FROM_PX = 22  # labels this far from their point get a thin leader line
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in display pixels


def _overlap(a: Box, b: Box, pad: float = 0.0) -> float:
    w = min(a[2], b[2]) + pad - max(a[0], b[0])
    h = min(a[3], b[3]) + pad - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _candidate(x: float, y: float, dx: float, dy: float, r: float, w: float, h: float) -> tuple[Box, str, str]:
    """The label box at distance r from (x, y) in direction (dx, dy), touching that point with the side
    that faces it; and the matching horizontal/vertical alignment."""
    cx, cy = x + r * dx, y + r * dy
    ha = "left" if dx > 0.3 else "right" if dx < -0.3 else "center"
    va = "bottom" if dy > 0.3 else "top" if dy < -0.3 else "center"
    x0 = cx if ha == "left" else cx - w if ha == "right" else cx - w / 2
    y0 = cy if va == "bottom" else cy - h if va == "top" else cy - h / 2
    return (x0, y0, x0 + w, y0 + h), ha, va


def place_labels(
    ax: Any,
    anchors: Sequence[tuple[float, float]],
    labels: Sequence[str],
    *,
    obstacles: Sequence[tuple[float, float]] = (),
    segments: Sequence[tuple[tuple[float, float], tuple[float, float]]] = (),
    colors: Sequence[str] | None = None,
    fontsize: float = 8,
    marker_px: float = 5.0,
) -> list[Any]:
    """Label each anchor (data coordinates) so that no label overlaps another label or a marker.

    Greedy and deterministic: labels are placed in the given order (rank order, so the best methods get the
    closest spots); each takes the first free spot on rings of growing radius around its point, inside the
    axes, measured with the renderer's real text extents; a label away from its point gets a leader line.
    Markers sit at every anchor and every ``obstacles`` point (``marker_px``: half their size in pixels);
    ``segments`` (error bars, connectors: pairs of data points) are avoided too, as 3-pixel-wide strips.
    Call it after the axes' limits and the figure's layout are final: it works in display pixels.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    frame = ax.get_window_extent(renderer)
    inner = (frame.x0 + 2, frame.y0 + 2, frame.x1 - 2, frame.y1 - 2)
    marks = [tuple(to_px(p)) for p in (*anchors, *obstacles)]
    blocked: list[Box] = [(x - marker_px, y - marker_px, x + marker_px, y + marker_px) for x, y in marks]
    for a, b in segments:
        (ax_, ay), (bx, by) = to_px(a), to_px(b)
        blocked.append((min(ax_, bx) - 1.5, min(ay, by) - 1.5, max(ax_, bx) + 1.5, max(ay, by) + 1.5))
    points_per_px = 72.0 / fig.dpi
    texts = []
    for i, (anchor, label) in enumerate(zip(anchors, labels)):
        probe = ax.text(0, 0, label, fontsize=fontsize)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        w, h = extent.width + 2, extent.height + 1
        x, y = to_px(anchor)
        best: tuple[float, Box, str, str, float] | None = None
        for r in _RADII_PX:
            for dx, dy in _DIRECTIONS:
                box, ha, va = _candidate(x, y, dx, dy, r, w, h)
                outside = (box[0] < inner[0] or box[1] < inner[1] or box[2] > inner[2] or box[3] > inner[3])
                if outside:
                    continue
                cost = sum(_overlap(box, b, pad=1.0) for b in blocked)
                if best is None or cost < best[0]:
                    best = (cost, box, ha, va, r)
                if cost == 0:
                    break
            if best is not None and best[0] == 0:
                break
        if best is None:  # no spot inside the axes at all (a tiny axes): beside the point, up and right
            best = (0.0, _candidate(x, y, *_DIRECTIONS[0], _RADII_PX[0], w, h)[0], "left", "bottom", _RADII_PX[0])
        _, box, ha, va, r = best
        tx = box[0] if ha == "left" else box[2] if ha == "right" else (box[0] + box[2]) / 2
        ty = box[1] if va == "bottom" else box[3] if va == "top" else (box[1] + box[3]) / 2
        color = colors[i] if colors is not None else "0.15"
        arrow = {"arrowstyle": "-", "color": "0.55", "lw": 0.6, "shrinkA": 1, "shrinkB": marker_px * points_per_px}
        texts.append(ax.annotate(
            label, anchor, xytext=((tx - x) * points_per_px, (ty - y) * points_per_px), textcoords="offset points",
            ha=ha, va=va, fontsize=fontsize, color=color, gid=LABEL_GID,
            arrowprops=arrow if r >= _LEADER_FROM_PX else None,
        ))  # fmt: skip
        blocked.append(box)
    return texts


def _pct_limits(values: Sequence[float], spreads: Sequence[float], *, min_span: float = 10.0) -> tuple[float, float]:
    """Axis limits in percent around the values and their spreads: room for labels, within 0..100."""
    lo = min(v - s for v, s in zip(values, spreads))
    hi = max(v + s for v, s in zip(values, spreads))
    span = max(hi - lo, min_span)
    mid = (lo + hi) / 2
    lo, hi = mid - 0.8 * span, mid + 0.8 * span
    if lo < 0:
        lo, hi = 0.0, hi - lo
    if hi > PCT:
        lo, hi = max(0.0, lo - (hi - PCT)), PCT
    return lo, hi


# ------------------------------------------------------------------------------------ self vs others


@dataclass(frozen=True)
class Point:
    """One method on the Self vs Others plane, in percent: means and seed spreads (std over seeds)."""

    label: str
    x: float
    y: float
    xerr: float = 0.0
    yerr: float = 0.0
    official: bool = True
    style_index: int | None = None  # the method's look (``style``) when not its position in the list


def self_vs_others_figure(points: Sequence[Point], *, title: str = "") -> Any:
    """Self A_last (x) against Others A_last (y), one point per method with its seed spread as error bars,
    every point labelled (``place_labels``), the y = x diagonal for reference. Returns the Figure."""
    if not points:
        raise DataError("self_vs_others_figure: no points to plot")
    fig, ax = plt.subplots(figsize=(7, 5.6))
    looks = [style(i if p.style_index is None else p.style_index) for i, p in enumerate(points)]
    for p, st in zip(points, looks):
        ax.errorbar(p.x, p.y, xerr=p.xerr, yerr=p.yerr, fmt=st["marker"], color=st["color"], ms=6, capsize=3,
                    elinewidth=1, mfc=st["color"] if p.official else "white", zorder=3)  # fmt: skip
    ax.set_xlim(*_pct_limits([p.x for p in points], [p.xerr for p in points]))
    ax.set_ylim(*_pct_limits([p.y for p in points], [p.yerr for p in points]))
    lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
    hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
    ax.plot([lo, hi], [lo, hi], color="0.8", lw=0.8, zorder=0, label="Self = Others")
    ax.set_xlabel("Self A_last (%, own tasks)")
    ax.set_ylabel("Others A_last (%, other clients' tasks)")
    ax.set_title(title or "Self vs Others")
    ax.grid(alpha=0.3)
    note = "error bars: std over seeds"
    if not all(p.official for p in points):
        note += "; hollow marker: unofficial (fewer seeds)"
    fig.text(0.01, 0.01, note, fontsize=8, color="0.35")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    bars = [seg for p in points for seg in (((p.x - p.xerr, p.y), (p.x + p.xerr, p.y)),
                                            ((p.x, p.y - p.yerr), (p.x, p.y + p.yerr)))]  # fmt: skip
    place_labels(ax, [(p.x, p.y) for p in points], [p.label for p in points], segments=bars,
                 colors=[st["color"] for st in looks])  # fmt: skip
    return fig


def plot_self_vs_others(points: Sequence[Point], path: str | Path, *, title: str = "") -> Path:
    """``self_vs_others_figure`` written as a PNG."""
    return _save(self_vs_others_figure(points, title=title), path)


# ----------------------------------------------------------------------------------------- cost plot


@dataclass(frozen=True)
class CostPoint:
    """One method's accuracy (percent) against its cost: training compute relative to Local (None where
    the result does not record it) and MiB communicated per seed (up + down)."""

    label: str
    self_score: float | None
    others_score: float | None
    compute_ratio: float | None
    comm_mib: float | None
    official: bool = True


#: the MiB panel turns logarithmic when the largest method sends this many times what the smallest does
COMM_LOG_SPAN = 20.0
COST_PANELS = (("compute_ratio", "training compute relative to Local (x)"),
               ("comm_mib", "MiB communicated per seed (up + down)"))  # fmt: skip


def cost_figure(points: Sequence[CostPoint], *, title: str = "") -> Any:
    """The paper's cost plot, two panels: Self and Others A_last against training compute relative to Local
    and against MiB communicated per seed; one point per method and score (circle: Self, triangle: Others,
    joined by a thin line), each method labelled once, at its Self point. Returns the Figure."""
    if not points:
        raise DataError("cost_figure: no points to plot")
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    scores = [v for p in points for v in (p.self_score, p.others_score) if v is not None]
    ylim = _pct_limits(scores, [0.0] * len(scores)) if scores else (0.0, PCT)
    placements = []
    for ax, (attr, xlabel) in zip(axes, COST_PANELS):
        shown = [(i, p) for i, p in enumerate(points) if getattr(p, attr) is not None
                 and (p.self_score is not None or p.others_score is not None)]  # fmt: skip
        ids = {i for i, _ in shown}
        missing = [p.label for i, p in enumerate(points) if i not in ids]
        for i, p in shown:
            x, st = getattr(p, attr), style(i)
            ys = [v for v in (p.self_score, p.others_score) if v is not None]
            if len(ys) == 2:
                ax.plot([x, x], ys, color=st["color"], lw=0.8, alpha=0.6, zorder=2)
            for v, marker in ((p.self_score, "o"), (p.others_score, "^")):
                if v is not None:
                    ax.plot([x], [v], marker=marker, ms=6, color=st["color"], ls="none", zorder=3,
                            mfc=st["color"] if p.official else "white")  # fmt: skip
        xs = [getattr(p, attr) for _, p in shown]
        positive = [x for x in xs if x > 0]
        if attr == "comm_mib" and positive and max(positive) > COMM_LOG_SPAN * min(positive):
            # bytes span decades (a few MiB to GiB): log beyond the smallest, zero (Local) still on the axis
            small, large = min(positive), max(positive)
            ax.set_xscale("symlog", linthresh=small, linscale=0.5)
            decades = range(math.ceil(math.log10(small)), math.floor(math.log10(large * 2.5)) + 1)
            ax.xaxis.set_major_locator(FixedLocator([0.0, *(10.0**k for k in decades)]))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_xlim(-0.3 * small, large * 2.5)
            xlabel += ", log scale"
        elif xs:  # compute from Local's 1x (or below), communication from zero (Local sends nothing)
            lo = min(1.0 if attr == "compute_ratio" else 0.0, min(xs))
            span = max(max(xs) - lo, 0.5 if attr == "compute_ratio" else 1e-9)
            ax.set_xlim(lo - 0.08 * span, max(xs) + 0.25 * span)
        if attr == "compute_ratio":
            ax.axvline(1.0, color="0.8", lw=0.8, zorder=0)
        ax.set_ylim(*ylim)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if missing:
            names = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
            ax.set_title(f"not shown (no {xlabel.split(' (')[0].split(' per ')[0]} recorded): {names}", fontsize=8,
                         color="0.35")  # fmt: skip
        placements.append((ax, shown, attr))
    axes[0].set_ylabel("A_last (%)")
    handles = [plt.Line2D([], [], marker="o", ls="none", color="0.3", label="Self A_last (own tasks)"),
               plt.Line2D([], [], marker="^", ls="none", color="0.3", label="Others A_last (other clients' tasks)")]
    fig.legend(handles=handles, loc="upper right", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(title or "Accuracy vs cost", x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    for ax, shown, attr in placements:
        anchors = [(getattr(p, attr), p.self_score if p.self_score is not None else p.others_score) for _, p in shown]
        both = [p for _, p in shown if p.self_score is not None and p.others_score is not None]
        place_labels(ax, anchors, [p.label for _, p in shown], obstacles=[(getattr(p, attr), p.others_score) for p in both],
                     segments=[((getattr(p, attr), p.self_score), (getattr(p, attr), p.others_score)) for p in both],
                     colors=[style(i)["color"] for i, _ in shown])  # fmt: skip
    return fig


def plot_cost(points: Sequence[CostPoint], path: str | Path, *, title: str = "") -> Path:
    """``cost_figure`` written as a PNG."""
    return _save(cost_figure(points, title=title), path)


def seed_curves(record: Mapping[str, Any]) -> dict[str, dict[int, list[float]]]:
    """``{"self"|"others": {round: [one value per successful seed]}}``, each the mean over clients."""
    out: dict[str, dict[int, list[float]]] = {}
    summaries = list(seed_summaries(record).values())
    for target, _ in TARGETS:
        per_round: dict[int, list[float]] = {}
        for summary in summaries:
            by_round: dict[int, list[float]] = {}
            for client in summary["per_client"].values():
                for r, v in ((client.get(target) or {}).get("curve") or {}).items():
                    by_round.setdefault(int(r), []).append(v)
            for r, vs in by_round.items():
                per_round.setdefault(r, []).append(_mean(vs))
        out[target] = dict(sorted(per_round.items()))
    return out


def mean_curves(record: Mapping[str, Any]) -> dict[str, dict[int, float]]:
    """``{"self"|"others": {round: score}}``: per round, the mean over clients, then over successful seeds."""
    return {t: {r: _mean(vs) for r, vs in curve.items()} for t, curve in seed_curves(record).items()}


def task_switches(record: Mapping[str, Any]) -> list[int]:
    """The rounds after which a client starts a new task, from the scenario spec stored in the record (its
    clients' stages; ``rounds_per_task`` where no stages are stored): empty for a static scenario."""
    spec = record["run_info"]["scenario"].get("spec") or {}
    if spec.get("mode") != "dynamic":
        return []
    starts = {int(st["start_round"]) for c in spec.get("clients") or () for st in c.get("stages") or ()}
    if not starts and spec.get("rounds_per_task"):
        starts = set(range(0, int(spec["rounds"]), int(spec["rounds_per_task"])))
    return sorted(r for r in starts if 0 < r < int(spec.get("rounds") or 0))


#: above this many records the curves are small multiples (one panel per record), not one tangle of lines
MAX_OVERLAID = 10


def _round_axis(ax: Any, last_round: int, switches: Sequence[int]) -> None:
    """Integer rounds 1..last_round, and a dotted line between the last round on a task and the next."""
    for k, r in enumerate(switches):
        ax.axvline(r + 0.5, color="0.45", ls=":", lw=1, zorder=0, gid="task-switch",
                   label="task switch" if k == 0 else None)  # fmt: skip
    ax.set_xlim(0.5, last_round + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)


def _curve_stats(curve: Mapping[int, Sequence[float]]) -> tuple[list[int], list[float], list[float]]:
    """(rounds, mean in percent, std in percent) of one target's per-round seed values."""
    rounds = list(curve)
    stats = [summarize(curve[r]) for r in rounds]
    return rounds, [PCT * st["mean"] for st in stats], [PCT * st["std"] for st in stats]


def _last_round(records: Sequence[Mapping[str, Any]], curves: Sequence[Mapping[str, Mapping[int, Any]]]) -> int:
    """The x axis' last round: the scenarios' round counts, or a later scored round."""
    spec_rounds = [int(r["run_info"]["scenario"].get("spec", {}).get("rounds") or 1) for r in records]
    seen = [max(c[t]) for c in curves for t, _ in TARGETS if c[t]]
    return max([1, *spec_rounds, *seen])


def learning_curves_figure(
    records: Sequence[Mapping[str, Any]], *, labels: Sequence[str] | None = None, title: str = ""
) -> Any:
    """Self and Others A (percent, mean over clients then seeds) per round, one line per record, the band
    its std over seeds; dotted vertical lines where a dynamic scenario's clients switch task (between the
    last round on a task and the first round on the next). More than ``MAX_OVERLAID`` records: small
    multiples instead (``curves_grid_figure``). Returns the Figure."""
    if not records:
        raise DataError("learning_curves_figure: no records to plot")
    labels = list(labels) if labels is not None else [_label(r) for r in records]
    if len(records) > MAX_OVERLAID:
        return curves_grid_figure(records, labels=labels, title=title)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    curves = [seed_curves(r) for r in records]
    for i, curve in enumerate(curves):
        st = style(i)
        for ax, (target, _) in zip(axes, TARGETS):
            rounds, means, stds = _curve_stats(curve[target])
            if not rounds:
                continue
            ax.plot(rounds, means, color=st["color"], ls=st["linestyle"], marker=st["marker"], ms=4, lw=1.4,
                    label=labels[i])  # fmt: skip
            if any(stds):
                ax.fill_between(rounds, [m - d for m, d in zip(means, stds)], [m + d for m, d in zip(means, stds)],
                                color=st["color"], alpha=0.12, lw=0)  # fmt: skip
    last_round = _last_round(records, curves)
    switches = sorted({r for record in records for r in task_switches(record)})
    for ax, (_, title_) in zip(axes, TARGETS):
        _round_axis(ax, last_round, switches)
        ax.set_title(title_)
        ax.set_xlabel("round")
    axes[0].set_ylabel("A (%, mean over clients; band: std over seeds)")
    handles, names = axes[0].get_legend_handles_labels()
    if not handles:
        handles, names = axes[1].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(0.8, 0.5), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    return fig


def curves_grid_figure(
    records: Sequence[Mapping[str, Any]], *, labels: Sequence[str], title: str = "", columns: int = 5
) -> Any:
    """One small panel per record, in the given order: its Self (solid, band: std over seeds) and Others
    (dashed) A per round in percent, over every other record's Self in light grey, on shared axes, with the
    task switches. Twenty-odd methods overlaid on one axis are a tangle no legend can untie; here each method
    is read against the field."""
    curves = [seed_curves(r) for r in records]
    means = [{t: _curve_stats(c[t]) for t, _ in TARGETS} for c in curves]
    last_round = _last_round(records, curves)
    switches = sorted({r for record in records for r in task_switches(record)})
    rows = math.ceil(len(records) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.1 * rows + 0.4), sharex=True, sharey=True,
                             squeeze=False)  # fmt: skip
    flat = [ax for row in axes for ax in row]
    for i, ax in enumerate(flat):
        if i >= len(records):
            ax.set_visible(False)
            if i >= columns:  # the panel above now ends its column: give it the round axis
                flat[i - columns].tick_params(labelbottom=True)
                flat[i - columns].set_xlabel("round", fontsize=8)
            continue
        field = [m["self"] for j, m in enumerate(means) if j != i and m["self"][0]]
        for k, (rounds, mean, _) in enumerate(field):
            ax.plot(rounds, mean, color="0.82", lw=0.8, zorder=1, gid="field",
                    label="other methods' Self" if k == 0 else None)  # fmt: skip
        for (target, _), color, ls in zip(TARGETS, ("C0", "C1"), ("-", "--")):
            rounds, mean, std = means[i][target]
            if not rounds:
                continue
            name = "Self" if target == "self" else "Others"
            ax.plot(rounds, mean, color=color, ls=ls, marker="o", ms=2.5, lw=1.4, zorder=3, gid=target, label=name)
            if any(std):
                ax.fill_between(rounds, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)],
                                color=color, alpha=0.15, lw=0, zorder=2)  # fmt: skip
        _round_axis(ax, last_round, switches)
        ax.set_title(labels[i], fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("round", fontsize=8)
    for row in axes:
        row[0].set_ylabel("A (%)", fontsize=8)
    handles, names = flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper right", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(f"{title} (bands: std over seeds)", x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (2.1 * rows + 0.4)))
    return fig


def plot_learning_curves(
    records: Sequence[Mapping[str, Any]], path: str | Path, *, labels: Sequence[str] | None = None, title: str = ""
) -> Path:
    """``learning_curves_figure`` written as a PNG."""
    if not records:
        raise DataError(f"{path}: no records to plot")
    return _save(learning_curves_figure(records, labels=labels, title=title), path)


def plot_client_bars(record: Mapping[str, Any], path: str | Path) -> Path:
    """Per-client Self and Others A_last (mean over successful seeds) as grouped bars."""
    summaries = list(seed_summaries(record).values())
    if not summaries:
        raise DataError(f"{path}: the record has no successful seed to plot")
    clients = sorted({c for s in summaries for c in s["per_client"]}, key=int)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(clients) + 2), 4))
    width = 0.4
    for k, (target, title) in enumerate(TARGETS):
        heights = []
        for c in clients:
            vals = [s["per_client"][c][target]["a_last"] for s in summaries if (s["per_client"].get(c) or {}).get(target)]
            heights.append(_mean(vals) if vals else 0.0)
        ax.bar([i + (k - 0.5) * width for i in range(len(clients))], [PCT * h for h in heights], width,
               label=title.split(" (")[0])  # fmt: skip
    ax.set_xticks(range(len(clients)), [f"client {c}" for c in clients], rotation=0)
    ax.set_ylabel("A_last (%)")
    ax.set_ylim(0, PCT)
    ax.set_title(_label(record))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_relevance(
    matrix: Sequence[Sequence[float]], path: str | Path, *, clients: Sequence[Any] | None = None, title: str = ""
) -> Path:
    """Heatmap of a client x client relevance matrix (row i: how much client i draws on client j)."""
    rows = [[float(v) for v in row] for row in matrix]
    n = len(rows)
    if n == 0 or any(len(row) != n for row in rows):
        raise DataError(f"{path}: relevance matrix must be square and non-empty, got {n} rows")
    if clients is not None and len(clients) != n:
        raise DataError(f"{path}: {len(clients)} client labels for a {n} x {n} relevance matrix")
    labels = [f"client {c}" for c in (clients if clients is not None else range(n))]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * n, 0.6 + 0.6 * n) if n > 6 else (5, 4))
    image = ax.imshow(rows, cmap="viridis", aspect="equal")
    fig.colorbar(image, ax=ax, label="relevance weight")
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                shade = "k" if image.norm(rows[i][j]) > 0.6 else "w"  # dark text on viridis' light end
                ax.text(j, i, f"{rows[i][j]:.2f}", ha="center", va="center", fontsize=7, color=shade)
    ax.set_xlabel("client j (drawn on)")
    ax.set_ylabel("client i (its customised global)")
    ax.set_title(title or "relevance")
    fig.tight_layout()
    return _save(fig, path)


def gate_table(diagnostics: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """FedMosaic's gate per client (a seed's ``extra.diagnostics``): beta on own vs others' prompts at the last
    logged round, and Others A_last with the global branch only, the local branch only and the learned gate
    (the last from the record's Others curve, filled in by the caller). Numbers in percent / beta x 100. The
    branch columns are left out when the run did not score them (``engine.diagnostic_passes`` off)."""
    last = diagnostics[-1]
    branches, gated = has_branches(diagnostics), has_gate(diagnostics)
    headers = ["client"] + (["beta own", "beta others"] if gated else [])
    headers += ["Others: global only", "Others: local only"] if branches else []
    rows = []
    for cid, d in sorted(last["clients"].items(), key=lambda kv: int(kv[0])):
        branch = d.get("others_by_branch") or {}
        cells = ([d.get("beta_own"), d.get("beta_others")] if gated else [])
        cells += [branch.get("global"), branch.get("local")] if branches else []
        rows.append([cid, *("-" if v is None else f"{100 * v:.1f}" for v in cells)])
    return headers, rows


def has_branches(diagnostics: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the last logged round scored Others per branch (``others_by_branch``)."""
    return any(d.get("others_by_branch") for d in diagnostics[-1]["clients"].values())


def has_gate(diagnostics: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the method logs a mixing weight (``beta_own``: FedMosaic's gate, APFL's 1 - alpha, FedDPA's
    lambda); the other dual-adapter methods log only Others per branch."""
    return any(c.get("beta_own") is not None for d in diagnostics for c in d["clients"].values())


def plot_gate(
    diagnostics: Sequence[Mapping[str, Any]], path: str | Path, *, learned: Mapping[str, float] | None = None,
    title: str = "",
) -> Path:
    """Left, where the method logs a mixing weight: mean gate beta over clients on their own prompts vs other
    clients' prompts, per round (1 = the global branch only). Right, where the run scored them: each client's
    Others score at the last round per branch, and with the scored model (``learned``: client -> Others
    A_last)."""
    rounds = [int(d["round"]) for d in diagnostics]
    branches = has_branches(diagnostics)
    gated = has_gate(diagnostics) or not branches  # a figure has at least one panel
    fig, axes = plt.subplots(1, gated + branches, figsize=(5 * (gated + branches), 4), squeeze=False)
    if gated:
        _beta_lines(axes[0][0], diagnostics, rounds)
    if branches:
        _branch_bars(axes[0][-1], diagnostics, learned, rounds[-1], gate_names(diagnostics)[1])
    fig.suptitle(title or "FedMosaic gate")
    fig.tight_layout()
    return _save(fig, path)


def gate_names(diagnostics: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """(what the gate table and figure show, the scored model's name): a mixing weight beside the branches, or
    only Others per branch (the dual-adapter methods without a weight)."""
    return ("gate", "learned gate") if has_gate(diagnostics) else ("Others per branch", "scored model")


def _beta_lines(ax: Any, diagnostics: Sequence[Mapping[str, Any]], rounds: Sequence[int]) -> None:
    """Mean gate beta over clients on their own prompts vs other clients' prompts, per round."""
    for key, label in (("beta_own", "own prompts"), ("beta_others", "other clients' prompts")):
        means = []
        for d in diagnostics:
            vals = [c[key] for c in d["clients"].values() if c.get(key) is not None]
            means.append(_mean(vals) if vals else math.nan)
        ax.plot(rounds, means, marker="o", label=label)
    ax.set_xticks(rounds)
    ax.set_xlabel("round")
    ax.set_ylabel("mean gate beta (1 = global branch)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)


def _branch_bars(
    ax: Any, diagnostics: Sequence[Mapping[str, Any]], learned: Mapping[str, float] | None, rnd: int, label: str
) -> None:
    """Each client's Others at the last round with each branch alone, and with the scored model (``label``)."""
    last = sorted(diagnostics[-1]["clients"].items(), key=lambda kv: int(kv[0]))
    bars = {f"{b} branch only": [(d.get("others_by_branch") or {}).get(b) or 0.0 for _, d in last] for b in ("global", "local")}
    if learned:
        bars[label] = [learned.get(c, 0.0) for c, _ in last]
    width = 0.8 / len(bars)
    for k, (label, values) in enumerate(bars.items()):
        offset = (k - (len(bars) - 1) / 2) * width
        ax.bar([i + offset for i in range(len(last))], [100 * v for v in values], width, label=label)
    ax.set_xticks(range(len(last)), [f"client {c}" for c, _ in last], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"Others at round {rnd} (%)")
    ax.legend(fontsize=8)


def plot_sensitivity(
    points: Sequence[Any], paper: Mapping[str, Mapping[str, Mapping[float, float]]],
    paper_default: Mapping[str, float], path: str | Path, *, spread: float | None = None,
) -> Path:
    """FedMosaic's sensitivity sweep (``drake.sensitivity.Point``s): one panel per parameter, the change of
    Self and Others A_last from the default (points), next to the paper's (``paper``: "self.a_last" |
    "others.a_last" -> parameter -> value -> %) as a change from its own default (``paper_default``; its rank sweep starts at
    32). ``spread``: the default's seed std of Self A_last (points), drawn as a grey band around zero."""
    params = list(dict.fromkeys(p.param for p in points))
    if not params:
        raise DataError(f"{path}: no sensitivity points to plot")
    fig, axes = plt.subplots(1, len(params), figsize=(3.2 * len(params), 3.4), squeeze=False)
    for ax, name in zip(axes[0], params):
        ours = sorted((p for p in points if p.param == name), key=lambda p: p.value)
        ref = next(p for p in ours if p.default)
        xs = [p.value for p in ours]
        for key, label, st in (("self.a_last", "Self (ours)", style(0)), ("others.a_last", "Others (ours)", style(1))):
            ax.plot(xs, [PCT * (p.scores[key] - ref.scores[key]) for p in ours], label=label, **st)
        for key, part, color in (("self.a_last", "Self", "0.5"), ("others.a_last", "Others", style(1)["color"])):
            of_paper = paper.get(key, {}).get(name) or {}
            theirs = sorted(of_paper.items())
            base = of_paper.get(paper_default.get(name, math.nan))
            if theirs and base is not None:
                ax.plot([v for v, _ in theirs], [s - base for _, s in theirs], label=f"{part} (paper)", color=color,
                        linestyle="--", marker=".", alpha=0.7)  # fmt: skip
        ax.axhline(0.0, color="0.8", linewidth=0.8)
        if spread:
            ax.axhspan(-spread, spread, color="0.9", zorder=0, label="seed std (Self, default)")
        ax.axvline(ref.value, color="0.8", linewidth=0.8, linestyle=":")
        ax.set_xscale("log", base=2 if name in ("tau", "lora_r", "align_ortho") else 10)
        ax.set_title(name)
        ax.set_xlabel("value (dotted: our default)")
    axes[0][0].set_ylabel("A_last change from the default (points)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)

