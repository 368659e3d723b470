"""FedMosaic's sensitivity study: the paper's hyper-parameter sweeps (fedmosaic.md §5.2) on drake-dynamic.

One parameter moves at a time from FedMosaic's default; every other setting is the study's. The budget is
smaller than the main study's (seed 0 only, by default): each point is compared with the default's run of
the same seeds, taken from the study's FedMosaic entry, so a difference is the parameter's, not the seed's.
The paper's Self A_last at each swept value is kept here so the report can set the two trends side by side.

``drake study --sensitivity`` runs the sweep (resumable, like the study; variants of one method are not
leaderboard entries, so nothing is submitted: each result is kept in ``KEPT``) and ``--report`` writes the
table and plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drake.errors import DataError, SpecError
from drake.spec import REPO_ROOT
from drake.study import StudyRun

SCENARIO = "drake-dynamic"
SEEDS = (0,)
#: parameter -> the values swept besides the default (lora_r moves lora_alpha with it: alpha / r stays 2)
GRID: dict[str, tuple[float, ...]] = {
    "tau": (0.0625, 0.25, 2.0),
    "ema_decay": (0.1, 0.9),
    "lora_r": (8, 16),
    "noise_std": (1e-5, 1e-2),
    "align_ortho": (0.125, 2.0),
}
#: the paper's Self A_last (%) at each value it plots, its default included (official plotting scripts)
PAPER: dict[str, dict[float, float]] = {
    "tau": {1 / 16: 66.81, 1 / 8: 67.78, 1 / 4: 67.90, 1 / 2: 67.86, 1: 67.68, 2: 67.28, 4: 67.30},
    "ema_decay": {0.1: 67.23, 0.3: 67.51, 0.5: 67.86, 0.7: 67.55, 0.9: 67.39},
    "lora_r": {32: 67.85, 64: 67.88, 128: 68.06, 256: 68.19, 512: 68.11, 1024: 67.08},
    "noise_std": {1e-5: 67.90, 1e-4: 67.86, 1e-3: 67.61, 1e-2: 67.25, 1e-1: 67.30},
    "align_ortho": {0.125: 67.63, 0.25: 67.53, 0.5: 67.85, 1: 67.76, 2: 67.83},
}
#: the paper's Others A_last (%) where it plots it: the tau sweep only
PAPER_OTHERS: dict[str, dict[float, float]] = {
    "tau": {1 / 16: 50.42, 1 / 8: 50.91, 1 / 4: 51.02, 1 / 2: 51.36, 1: 51.37, 2: 51.34, 4: 51.30},
}
#: the paper's curves by the score they show (what the table and the plot set beside ours)
PAPER_BY_SCORE = {"self.a_last": PAPER, "others.a_last": PAPER_OTHERS}
#: the paper's default of each parameter (its rank is 128; the zoo allows at most 32, FedMosaic's default here)
PAPER_DEFAULT = {"tau": 0.5, "ema_decay": 0.5, "lora_r": 128, "noise_std": 1e-4, "align_ortho": 0.5}
METRICS = (("self", "a_last"), ("self", "a_auc"), ("others", "a_last"), ("others", "a_auc"))


def defaults() -> dict[str, float]:
    """FedMosaic's default of each swept parameter."""
    from fedmosaic.method import FedMosaicConfig

    config = FedMosaicConfig()
    return {name: getattr(config, name) for name in GRID}


def _sets(name: str, value: float) -> tuple[str, ...]:
    if name == "lora_r":
        return (f"lora_r={int(value)}", f"lora_alpha={2 * int(value)}")
    return (f"{name}={value:g}",)


def sensitivity_plan(params: Sequence[str] | None = None) -> list[StudyRun]:
    """One run per (parameter, non-default value) of ``GRID``; ``params`` narrows it."""
    unknown = sorted(set(params or ()) - set(GRID))
    if unknown:
        raise SpecError(f"sensitivity: unknown parameter {', '.join(unknown)}; known: {', '.join(GRID)}")
    return [
        StudyRun(f"fedmosaic+{name}={value:g}", "fedmosaic", SCENARIO, sets=_sets(name, value))
        for name in (params or GRID)
        for value in GRID[name]
    ]


@dataclass(frozen=True)
class Point:
    """One value of one parameter: its scores (fractions, mean over the seeds) and RELA's effective peers."""

    param: str
    value: float
    default: bool
    scores: dict[str, float]  # "self.a_last" -> mean over seeds
    peers: float | None = None  # RELA's effective number of clients in a client's global (``rela_peers``)


def _scores(record: Mapping[str, Any], seeds: Sequence[int]) -> dict[str, float]:
    from drake.results import seed_summaries

    per_seed = seed_summaries(record)
    missing = sorted(set(seeds) - set(per_seed))
    if missing:
        raise DataError(f"{record['run_info']['method']['name']}: no successful seed {missing} in the result")
    return {f"{part}.{stat}": sum(per_seed[s][part][stat]["mean"] for s in seeds) / len(seeds)
            for part, stat in METRICS}  # fmt: skip


def rela_peers(record: Mapping[str, Any], seeds: Sequence[int]) -> float | None:
    """How many other clients a client's RELA global draws on: 1 / sum_j w_ij^2 of its relevance weights (the
    effective number; 9 when all ten clients count alike), averaged over clients, logged rounds and ``seeds``;
    None when the run logged no relevance (``rela=false``)."""
    per_seed = [s for s in record["results"]["per_seed"] if s["seed"] in seeds and s.get("relevance")]
    values = [1.0 / sum(w * w for w in row) for s in per_seed for m in s["relevance"] for row in m["matrix"]
              if any(row)]  # fmt: skip
    return sum(values) / len(values) if values else None


def _value_of(record: Mapping[str, Any], name: str) -> float:
    return float(record["run_info"]["method"]["config"][name])


def sensitivity_points(
    records: Sequence[Mapping[str, Any]], default: Mapping[str, Any], seeds: Sequence[int] = SEEDS
) -> list[Point]:
    """Every parameter's points (default first, then by value) from the sweep's result ``records`` and the
    study's FedMosaic entry ``default`` (scored on the same ``seeds``)."""
    base = defaults()
    points: list[Point] = []
    for name in GRID:
        ran = [r for r in records if _value_of(r, name) != base[name]]
        if not ran:
            continue
        rows = [(base[name], True, default)] + [(_value_of(r, name), False, r) for r in ran]
        for value, is_default, record in sorted(rows, key=lambda row: row[0]):
            points.append(Point(name, value, is_default, _scores(record, seeds), rela_peers(record, seeds)))
    return points


def sensitivity_table(points: Sequence[Point]) -> str:
    """Markdown: per parameter and value, our four scores, RELA's effective peers (``rela_peers``) and the
    change of Self and Others A_last from the default, each next to the paper's change (its default is
    ``PAPER_DEFAULT``; "-" where it has none)."""
    head = ("parameter", "value", "Self A_last", "Self A_AUC", "Others A_last", "Others A_AUC", "RELA peers",
            "Δ Self A_last", "paper", "Δ Others A_last", "paper")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    for p in points:
        ref = next(q for q in points if q.param == p.param and q.default)
        changes = []
        for key, table in PAPER_BY_SCORE.items():
            theirs, paper_ref = (table.get(p.param, {}).get(v) for v in (p.value, PAPER_DEFAULT[p.param]))
            ours = 100 * (p.scores[key] - ref.scores[key])
            changes += ["0" if p.default else f"{ours:+.1f}",
                        "-" if theirs is None or paper_ref is None else f"{theirs - paper_ref:+.2f}"]  # fmt: skip
        cells = [p.param, f"**{p.value:g}**" if p.default else f"{p.value:g}",
                 *(f"{100 * p.scores[f'{a}.{b}']:.1f}" for a, b in METRICS),
                 "-" if p.peers is None else f"{p.peers:.1f}", *changes]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_spread(default: Mapping[str, Any]) -> tuple[dict[str, float], int]:
    """The default's std over all its seeds, per score in ``METRICS`` (the scale of a seed-to-seed change,
    against which a one-seed point's difference from the default is read), and how many seeds that is."""
    from drake.results import recompute_summary

    summary = recompute_summary(default, unseen=False)
    return {f"{part}.{stat}": summary[part][stat]["std"] for part, stat in METRICS}, summary["n_seeds"]


def load_sweep(folder: Path) -> list[dict[str, Any]]:
    """The sweep's result files under ``folder`` (one per point)."""
    from drake.results import load_result

    return [load_result(p) for p in sorted(folder.glob("fedmosaic--*.json"))]


#: where the sweep's results are kept (committed), beside the board's results
KEPT = REPO_ROOT / "leaderboard" / "sensitivity"
BEGIN = "<!-- sensitivity: generated by `drake study --sensitivity --report docs/results.md`; do not edit -->"
END = "<!-- end of sensitivity -->"


def study_default(board: Path | None = None) -> dict[str, Any]:
    """The study's FedMosaic entry on drake-dynamic (hetero pool, official protocol, no named config, every
    swept parameter at its default): the default point. The paper's ablations share its file prefix."""
    from drake.results import load_result
    from leaderboard.build import method_label
    from leaderboard.submit import DEFAULT_BOARD

    folder = (board or DEFAULT_BOARD) / "results"
    found = sorted(folder.glob(f"fedmosaic--{SCENARIO}-hetero--*.json"))
    base = defaults()

    def is_default(info: Mapping[str, Any]) -> bool:
        config = info["method"]["config"]
        return (info.get("protocol", {}).get("name") == "official" and method_label(info) == "fedmosaic"
                and all(config.get(name) == value for name, value in base.items()))  # fmt: skip

    records = [r for r in map(load_result, found) if is_default(r["run_info"])]
    if len(records) != 1:
        raise DataError(f"sensitivity: expected one official FedMosaic entry on {SCENARIO} in {folder}, found "
                        f"{len(records)}; run `drake study --methods fedmosaic` first")  # fmt: skip
    return records[0]


def write_report(doc: Path, seeds: Sequence[int] = SEEDS, folder: Path = KEPT, board: Path | None = None) -> str:
    """Rewrite ``doc``'s generated sensitivity block (table + plot link) and the plot beside it."""
    from drake.io import atomic_write_text
    from drake.plots import plot_sensitivity
    from leaderboard.readme import replace_block

    default = study_default(board)
    points = sensitivity_points(load_sweep(folder), default, seeds)
    if not points:
        raise DataError(f"sensitivity: no sweep results in {folder}; run `drake study --sensitivity` first")
    spread, n = seed_spread(default)
    image = doc.parent / "img" / "fedmosaic-sensitivity.png"
    plot_sensitivity(points, PAPER_BY_SCORE, PAPER_DEFAULT, image, spread=100 * spread["self.a_last"])
    noise = (f"Seeds {', '.join(map(str, seeds))}; scores in %. The default's std over the study's {n} seeds: "
             f"Self A_last {100 * spread['self.a_last']:.1f}, Others A_last {100 * spread['others.a_last']:.1f} "
             "(the grey band of the plot: a change within it is the size of a seed change). RELA peers: how many "
             "other clients a client's global draws on (1 / sum of its squared relevance weights; 9 when all count "
             "alike), mean over clients and rounds.")
    block = "\n".join([BEGIN, "", noise, "",
                       sensitivity_table(points), "", f"![FedMosaic sensitivity]({image.relative_to(doc.parent)})",
                       "", END])  # fmt: skip
    text = doc.read_text(encoding="utf-8")
    atomic_write_text(doc, replace_block(text, block, str(doc), begin=BEGIN, end=END, what="sensitivity"))
    return f"wrote the sensitivity table of {len(points)} points to {doc} and the plot to {image}"
