"""The leaderboard's figures (drake/plots.py): labels that never overlap, percent axes, integer rounds with
the task switches of the scenario spec, the cost plot, reproducible PNGs. No data build: records come from
``drake.results.make_record`` on the shipped scenarios with made-up scores."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from drake import plots
from drake.plots import (  # noqa: E402
    LABEL_GID,
    MAX_OVERLAID,
    CostPoint,
    Point,
    cost_figure,
    gate_table,
    has_gate,
    learning_curves_figure,
    mean_curves,
    plot_cost,
    plot_gate,
    plot_learning_curves,
    plot_self_vs_others,
    self_vs_others_figure,
    task_switches,
)
from drake.protocol import PROTOCOLS  # noqa: E402
from drake.results import make_record  # noqa: E402
from drake.spec import load_scenario  # noqa: E402

ENV = {"drake_version": "0.1.0", "git_commit": None, "packages": {}, "hardware": {}}


def record(scenario: str, method: str, level: float) -> dict[str, Any]:
    """A two-seed record on ``scenario``: every scored round's task scores rise with the round (fractions)."""
    sc = load_scenario(scenario)
    protocol = PROTOCOLS.get("official").record(sc)
    scored = set(protocol["self_rounds"]) | set(protocol["others_rounds"])
    tasks = [t for c in sc.clients for t in c.tasks]
    per_seed = []
    for seed in (0, 1):
        rounds = [{"round": r, "train": {},
                   "eval": {str(c.id): {t: round(level + 0.01 * r + 0.01 * seed, 6) for t in tasks} for c in sc.clients}
                   if r in scored else {}} for r in range(1, sc.rounds + 1)]  # fmt: skip
        per_seed.append({"seed": seed, "status": "success", "error": None, "final": {}, "rounds": rounds,
                         "comm_bytes": {"total_up": 0, "total_down": 0, "per_round": []}, "wall_seconds": 1.0,
                         "extra": {}})  # fmt: skip
    return make_record(command="x", engine="sequential", method=method, method_config={}, scenario=sc, data={},
                       per_seed=per_seed, tasks={}, env=ENV, created_at="2026-01-01T00:00:00+00:00", models={},
                       protocol=protocol)  # fmt: skip


def label_boxes(fig: Any) -> list[Any]:
    """The drawn text extents of the placed labels (``Text``'s own extent: an Annotation's adds its leader)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = fig.findobj(lambda a: isinstance(a, Text) and a.get_gid() == LABEL_GID)
    return [Text.get_window_extent(t, renderer) for t in labels]


def overlapping_pairs(boxes: list[Any]) -> list[tuple[int, int]]:
    return [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2) if a.overlaps(b)]


CLOSE = [Point(f"method-{i:02d}", 40 + 0.1 * i, 30 + 0.05 * (i % 4), 0.3, 0.2, i % 5 != 4) for i in range(20)]
SAME = [Point(f"m{i}", 50.0, 50.0) for i in range(12)]


@pytest.mark.parametrize("points", [CLOSE, SAME], ids=["20-within-2-points", "12-on-one-spot"])
def test_scatter_labels_never_overlap(points: list[Point]) -> None:
    fig = self_vs_others_figure(points, title="crowd")
    ax = fig.axes[0]
    boxes = label_boxes(fig)
    assert len(boxes) == len(points)
    assert overlapping_pairs(boxes) == []
    frame = ax.get_window_extent(fig.canvas.get_renderer())
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)
    centres = ax.transData.transform([(p.x, p.y) for p in points])
    assert not any(b.contains(x, y) for b in boxes for x, y in centres)  # no label hides a marker
    plt.close(fig)

    # not vacuous: the old placement (every label 6 points up and right of its point) overlaps here
    fig, ax = plt.subplots(figsize=(7, 5.6))
    ax.set_xlim(*frame_limits(points))
    ax.set_ylim(*frame_limits(points, y=True))
    for p in points:
        ax.annotate(p.label, (p.x, p.y), textcoords="offset points", xytext=(6, 6), fontsize=8, gid=LABEL_GID)
    assert len(overlapping_pairs(label_boxes(fig))) >= len(points) // 2
    plt.close(fig)


def frame_limits(points: list[Point], y: bool = False) -> tuple[float, float]:
    from drake.plots import _pct_limits

    return _pct_limits([p.y if y else p.x for p in points], [p.yerr if y else p.xerr for p in points])


def test_scatter_axes_are_in_percent() -> None:
    fig = self_vs_others_figure([Point("a", 38.7, 20.1, 0.4, 0.2), Point("b", 61.0, 44.0, official=False)])
    ax = fig.axes[0]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert 0 <= x0 < 38.3 and 61.0 < x1 <= 100 and 0 <= y0 < 19.9 and 44.0 < y1 <= 100
    assert "%" in ax.get_xlabel() and "%" in ax.get_ylabel()
    assert "unofficial" in " ".join(t.get_text() for t in fig.texts)
    plt.close(fig)


def test_learning_curves_integer_rounds_percent_and_task_switches() -> None:
    dyn = [record("drake-dynamic", "fedavg", 0.3), record("drake-dynamic", "local", 0.2)]
    assert task_switches(dyn[0]) == [5, 10, 15]  # drake-dynamic: a new task every 5 of 20 rounds
    assert task_switches(record("drake-static", "fedavg", 0.3)) == []
    fig = learning_curves_figure(dyn, labels=["fedavg", "local"])
    fig.canvas.draw()
    self_ax, others_ax = fig.axes[:2]
    for ax in (self_ax, others_ax):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
        assert all(label.get_text().lstrip("−-").isdigit() for label in ax.get_xticklabels() if label.get_text())
        switches = [line.get_xdata()[0] for line in ax.get_lines() if line.get_gid() == "task-switch"]
        assert switches == [5.5, 10.5, 15.5]  # between the last round on a task and the first on the next
    fedavg = next(line for line in self_ax.get_lines() if line.get_label() == "fedavg")
    expected = mean_curves(dyn[0])["self"]
    assert list(fedavg.get_xdata()) == list(expected)
    assert list(fedavg.get_ydata()) == pytest.approx([100 * v for v in expected.values()])  # percent
    plt.close(fig)
    smoke = record("smoke", "fedavg", 0.3)
    fig = learning_curves_figure([smoke])
    fig.canvas.draw()
    ax = fig.axes[0]
    assert [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]] == [1, 2]  # not 1.2, 1.4...
    assert [line.get_xdata()[0] for line in ax.get_lines() if line.get_gid() == "task-switch"] == [1.5]
    plt.close(fig)


def test_many_methods_become_small_multiples_each_against_the_field() -> None:
    n = MAX_OVERLAID + 2
    recs = [record("drake-dynamic", f"m{i}", 0.2 + 0.01 * i) for i in range(n)]
    labels = [f"m{i}" for i in range(n)]
    fig = learning_curves_figure(recs, labels=labels, title="drake-dynamic: learning curves")
    fig.canvas.draw()
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == labels  # one panel per method, in the board's order
    assert len(fig.axes) - len(panels) == (-n) % 5  # the grid's unused cells are hidden
    ends = {max(range(i, n, 5)) for i in range(5)}  # the last panel of each column
    assert {i for i, ax in enumerate(panels) if ax.get_xlabel() == "round"} == ends  # each column keeps its axis
    for ax, rec in zip(panels, recs):
        lines = {gid: [line for line in ax.get_lines() if line.get_gid() == gid] for gid in ("self", "others", "field")}
        assert len(lines["self"]) == len(lines["others"]) == 1 and len(lines["field"]) == n - 1
        expected = mean_curves(rec)
        for target in ("self", "others"):
            (line,) = lines[target]
            assert list(line.get_xdata()) == list(expected[target])
            assert list(line.get_ydata()) == pytest.approx([100 * v for v in expected[target].values()])
        assert [line.get_xdata()[0] for line in ax.get_lines() if line.get_gid() == "task-switch"] == [5.5, 10.5, 15.5]
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    assert panels[0].get_shared_y_axes().joined(panels[0], panels[-1])  # one scale to compare panels on
    plt.close(fig)
    few = learning_curves_figure(recs[:MAX_OVERLAID], labels=labels[:MAX_OVERLAID])
    assert len(few.axes) == 2  # up to MAX_OVERLAID methods: Self and Others overlaid, one line per method
    plt.close(few)


COST = [CostPoint("fedmosaic", 68.5, 51.4, 1.09, 850.0), CostPoint("local", 65.8, 40.0, 1.0, 0.0),
        CostPoint("fedavg", 64.0, 45.0, 1.0, 400.0), CostPoint("ditto", 66.3, 47.0, 2.0, 400.0),
        CostPoint("fedprox", 64.1, 45.2, 1.0, 400.0), CostPoint("fedper", 66.0, 44.0, None, 398.0, False)]  # fmt: skip


def test_cost_plot_one_point_per_method_labelled_without_overlap() -> None:
    fig = cost_figure(COST, title="cost")
    compute, comm = fig.axes[:2]
    assert "relative to Local" in compute.get_xlabel() and "MiB" in comm.get_xlabel()
    assert "%" in compute.get_ylabel()
    boxes = label_boxes(fig)
    renderer = fig.canvas.get_renderer()
    for ax, n in ((compute, 5), (comm, 6)):  # fedper records no compute ratio: left out, and said so
        frame = ax.get_window_extent(renderer)
        mine = [b for b in boxes if frame.contains(b.x0 + 1, b.y0 + 1)]
        assert len(mine) == n and overlapping_pairs(mine) == []
        selfs = [tuple(line.get_xydata()[0]) for line in ax.get_lines() if line.get_marker() == "o"]
        others = [tuple(line.get_xydata()[0]) for line in ax.get_lines() if line.get_marker() == "^"]
        assert len(selfs) == len(others) == n
        assert set(selfs) == {(getattr(p, "compute_ratio" if ax is compute else "comm_mib"), p.self_score)
                              for p in COST if (p.compute_ratio if ax is compute else p.comm_mib) is not None}  # fmt: skip
    assert compute.get_title() == "not shown (no training compute relative to Local recorded): fedper"
    assert comm.get_title() == ""
    plt.close(fig)


def test_cost_plot_bytes_on_a_log_axis_only_when_they_span_decades() -> None:
    """FedAMoLE's GiB beside FedMKT's tens of MiB would crowd every other method into one column on a linear
    axis; then the MiB panel is logarithmic beyond the smallest, with Local's zero still on it."""
    spread = [*COST, CostPoint("fedamole", 60.0, 40.0, 1.03, 3540.0), CostPoint("fedmkt", 61.0, 41.0, 0.93, 48.6)]
    for points, scale in ((COST, "linear"), (spread, "symlog")):
        fig = cost_figure(points)
        comm = fig.axes[1]
        assert comm.get_xscale() == scale and ("log scale" in comm.get_xlabel()) == (scale == "symlog")
        lo, hi = comm.get_xlim()
        assert lo < 0.0 and hi > max(p.comm_mib for p in points if p.comm_mib is not None)
        if scale == "symlog":
            assert [t for t in comm.get_xticks() if lo <= t <= hi] == [0.0, 100.0, 1000.0]
        plt.close(fig)


def test_pngs_are_reproducible(tmp_path: Path) -> None:
    dyn = [record("drake-dynamic", "fedavg", 0.3)]
    for name, draw in (("scatter", lambda p: plot_self_vs_others(CLOSE, p)),
                       ("cost", lambda p: plot_cost(COST, p)),
                       ("curves", lambda p: plot_learning_curves(dyn, p, labels=["fedavg"])),):  # fmt: skip
        a, b = draw(tmp_path / f"{name}-1.png").read_bytes(), draw(tmp_path / f"{name}-2.png").read_bytes()
        assert a == b and a[:8] == b"\x89PNG\r\n\x1a\n" and b"Software" not in a and b"Date" not in a


@pytest.mark.parametrize("passes", [True, False])
def test_gate_table_and_plot_show_the_branches_only_when_scored(passes: bool, tmp_path: Path) -> None:
    """Others per branch costs two more Others passes (engine.diagnostic_passes); without it the gate's table
    and figure leave the branch columns / panel out instead of showing zeros."""
    clients = {str(c): {"beta_own": 0.6, "beta_others": 0.7} for c in range(3)}
    if passes:
        for c, d in clients.items():
            d["others_by_branch"] = {"global": 0.3 + int(c) / 100, "local": 0.25}
    diagnostics = [{"round": 10, "clients": {c: {k: v for k, v in d.items() if k != "others_by_branch"}
                                            for c, d in clients.items()}},
                   {"round": 20, "clients": clients}]  # fmt: skip
    headers, rows = gate_table(diagnostics)
    assert ("Others: global only" in headers) is passes and all(len(r) == len(headers) for r in rows)
    assert rows[0][:3] == ["0", "60.0", "70.0"] and rows[2][3:] == (["32.0", "25.0"] if passes else [])
    plot_gate(diagnostics, tmp_path / "gate.png", learned={"0": 0.3})
    plt.close("all")
    assert (tmp_path / "gate.png").stat().st_size > 0


def test_branches_without_a_gate_show_no_beta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FedDAT, Ditto, PerAda and FedSim log Others per branch but no mixing weight: no beta columns, one panel
    of bars with the scored model beside each adapter alone."""
    diagnostics = [{"round": 20, "clients": {str(c): {"others_by_branch": {"global": 0.4, "local": 0.3}} for c in range(2)}}]
    assert has_gate(diagnostics) is False
    headers, rows = gate_table(diagnostics)
    assert headers == ["client", "Others: global only", "Others: local only"] and rows[1] == ["1", "40.0", "30.0"]
    figures: list = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or Path(path))
    plot_gate(diagnostics, tmp_path / "branches.png", learned={"0": 0.35, "1": 0.33}, title="feddat")
    (fig,) = figures
    assert len(fig.axes) == 1 and [t.get_text() for t in fig.axes[0].get_legend().get_texts()][-1] == "scored model"
    plt.close("all")
