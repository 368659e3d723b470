"""Figures for results and the leaderboard: learning curves, per-client bars, relevance heatmaps.

Every number plotted comes from ``drake.results.seed_summaries`` (so from ``drake.metrics``), and every PNG
is byte-for-byte reproducible: Agg backend, fixed size and dpi, no software/date metadata, atomic write.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from drake.errors import DataError  # noqa: E402
from drake.io import atomic_write_bytes  # noqa: E402
from drake.results import seed_summaries  # noqa: E402

DPI = 100
TARGETS = (("self", "Self (own tasks)"), ("others", "Others (other clients' tasks)"))


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


def mean_curves(record: Mapping[str, Any]) -> dict[str, dict[int, float]]:
    """``{"self"|"others": {round: score}}``: per round, the mean over clients, then over successful seeds."""
    out: dict[str, dict[int, float]] = {}
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
        out[target] = {r: _mean(vs) for r, vs in sorted(per_round.items())}
    return out


def plot_learning_curves(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Self and Others score vs round, one line per record (method), in two panels."""
    if not records:
        raise DataError(f"{path}: no records to plot")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for record in records:
        curves = mean_curves(record)
        for ax, (target, _) in zip(axes, TARGETS):
            if curves[target]:
                rounds = list(curves[target])
                ax.plot(rounds, [curves[target][r] for r in rounds], marker="o", label=_label(record))
    for ax, (_, title) in zip(axes, TARGETS):
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score (mean over clients and seeds)")
    axes[0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, path)


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
        ax.bar([i + (k - 0.5) * width for i in range(len(clients))], heights, width, label=title.split(" (")[0])
    ax.set_xticks(range(len(clients)), [f"client {c}" for c in clients], rotation=0)
    ax.set_ylabel("A_last")
    ax.set_ylim(0, 1)
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
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{rows[i][j]:.2f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_title(title or "relevance")
    fig.tight_layout()
    return _save(fig, path)


def gate_table(diagnostics: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """FedMosaic's gate per client (a seed's ``extra.diagnostics``): beta on own vs others' prompts at the last
    logged round, and Others A_last with the global branch only, the local branch only and the learned gate
    (the last from the record's Others curve, filled in by the caller). Numbers in percent / beta x 100."""
    last = diagnostics[-1]
    headers = ["client", "beta own", "beta others", "Others: global only", "Others: local only"]
    rows = []
    for cid, d in sorted(last["clients"].items(), key=lambda kv: int(kv[0])):
        branch = d.get("others_by_branch") or {}
        cells = [d.get("beta_own"), d.get("beta_others"), branch.get("global"), branch.get("local")]
        rows.append([cid, *("-" if v is None else f"{100 * v:.1f}" for v in cells)])
    return headers, rows


def plot_gate(
    diagnostics: Sequence[Mapping[str, Any]], path: str | Path, *, learned: Mapping[str, float] | None = None,
    title: str = "",
) -> Path:
    """Left: mean gate beta over clients on their own prompts vs other clients' prompts, per round (1 = the
    global branch only). Right: each client's Others score at the last round per branch, and with the
    learned gate (``learned``: client -> Others A_last)."""
    rounds = [int(d["round"]) for d in diagnostics]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("beta_own", "own prompts"), ("beta_others", "other clients' prompts")):
        means = []
        for d in diagnostics:
            vals = [c[key] for c in d["clients"].values() if c.get(key) is not None]
            means.append(_mean(vals) if vals else math.nan)
        left.plot(rounds, means, marker="o", label=label)
    left.set_xticks(rounds)
    left.set_xlabel("round")
    left.set_ylabel("mean gate beta (1 = global branch)")
    left.set_ylim(0, 1)
    left.legend(fontsize=8)
    last = sorted(diagnostics[-1]["clients"].items(), key=lambda kv: int(kv[0]))
    bars = {f"{b} branch only": [(d.get("others_by_branch") or {}).get(b) or 0.0 for _, d in last] for b in ("global", "local")}
    if learned:
        bars["learned gate"] = [learned.get(c, 0.0) for c, _ in last]
    width = 0.8 / len(bars)
    for k, (label, values) in enumerate(bars.items()):
        offset = (k - (len(bars) - 1) / 2) * width
        right.bar([i + offset for i in range(len(last))], [100 * v for v in values], width, label=label)
    right.set_xticks(range(len(last)), [f"client {c}" for c, _ in last], rotation=45, ha="right", fontsize=8)
    right.set_ylabel(f"Others at round {rounds[-1]} (%)")
    right.legend(fontsize=8)
    fig.suptitle(title or "FedMosaic gate")
    fig.tight_layout()
    return _save(fig, path)
