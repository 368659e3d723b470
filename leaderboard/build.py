"""Render the leaderboard: a pure function of the accepted result files (and tasks.yaml).

Every accepted file is verified again (a file edited after acceptance, a name that is not a plain name, or
a file in the store that submit did not write under that name stops the build), every summary is
recomputed with ``drake.metrics`` through ``drake.results.recompute_summary``, and the outputs are
byte-for-byte reproducible: no clock, no absolute paths, sorted inputs, PNGs without metadata. Outputs::

    <out>/leaderboard.md  .csv  .json   one table per scenario (name, model pool, scenario fingerprint)
    <out>/index.html                    the same tables, sortable by clicking a header; inline CSS/JS only
    <out>/plots/*.png                   per table: Self vs Others scatter, learning curves, accuracy vs cost;
                                        per entry with relevance (FedMosaic): its relevance heatmap
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from drake.errors import DataError
from drake.io import atomic_write_text
from drake.protocol import table_key
from drake.results import recompute_summary, unseen_summary
from drake.spec import TaskTable, load_tasks
from leaderboard.submit import (
    MIN_SEEDS,
    architecture_name,
    check_record,
    check_store,
    expected_names,
    load_accepted,
    results_dir,
    successful_seeds,
    zoo_problems,
)

FORMAT = "drake-leaderboard"
FORMAT_VERSION = 1
STATS = (("self", "a_last"), ("self", "a_auc"), ("others", "a_last"), ("others", "a_auc"))
STAT_TITLES = {"self_a_last": "Self A_last", "self_a_auc": "Self A_AUC",
               "others_a_last": "Others A_last", "others_a_auc": "Others A_AUC"}  # fmt: skip
# drake.results.unseen_summary (zero-shot / after the short adaptation), last columns; "-" for records without it
UNSEEN_TITLES = {"unseen_zero_shot": "Unseen 0-shot", "unseen_adapted": "Unseen adapted"}


@dataclass(frozen=True)
class Entry:
    """One leaderboard row: an accepted file's recomputed numbers and identity."""

    file: str
    method: str
    architectures: tuple[str, ...]
    clients: int
    stats: Mapping[str, Mapping[str, Any]]  # "self_a_last" -> {"mean", "std", "worst_client", "n"}
    comm_up: float | None  # bytes per seed, mean over successful seeds
    comm_down: float | None
    compute_ratio: float | None  # extra.compute_ratio_to_local, mean over successful seeds (all must have it)
    seeds: tuple[int, ...]
    successful_seeds: int
    official: bool
    config_hash: str
    created_at: str
    command: str
    drake_version: str
    git_commit: str | None
    git_dirty: bool | None = None  # run_info.git_dirty: the code differed from git_commit (None: not recorded)
    rank: int = 0

    @property
    def rerun(self) -> str:
        """The stored command as a user reruns it: into ``runs/`` (the stored ``--out`` was the submitter's
        folder) and without ``--resume`` (which would continue a leftover run of the same recipe there)."""
        try:
            words = shlex.split(self.command)
        except ValueError:  # not a shell line (unbalanced quotes): show it as stored
            return self.command
        if not any(w in ("--out", "--resume") or w.startswith("--out=") for w in words):
            return self.command
        out, skip = [], False
        for w in words:
            if skip:
                skip = False
            elif w == "--out":
                out += ["--out", "runs/"]
                skip = True
            elif w.startswith("--out="):
                out.append("--out=runs/")
            elif w != "--resume":
                out.append(w)
        return shlex.join(out)

    @property
    def code(self) -> str:
        """The code an entry ran, as the Reproduce lines say it."""
        commit = f"commit {self.git_commit[:10]}" if self.git_commit else "no recorded commit"
        return commit + (" + uncommitted changes" if self.git_dirty else "")

    @property
    def comm_total(self) -> float | None:
        return None if self.comm_up is None or self.comm_down is None else self.comm_up + self.comm_down

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "method": self.method, "architectures": list(self.architectures),
            "clients": self.clients, **{k: dict(v) for k, v in self.stats.items()},
            "comm_bytes_per_seed": {"up": self.comm_up, "down": self.comm_down, "total": self.comm_total},
            "compute_ratio_to_local": self.compute_ratio, "seeds": list(self.seeds),
            "successful_seeds": self.successful_seeds, "official": self.official, "config_hash": self.config_hash,
            "file": self.file, "created_at": self.created_at, "command": self.command,
            "drake_version": self.drake_version, "git_commit": self.git_commit, "git_dirty": self.git_dirty,
        }  # fmt: skip


@dataclass
class Group:
    """The entries of one table, ranked: the same scenario (name, model pool, fingerprint), the same evaluation
    protocol (drake/protocol.py: numbers of two protocols are never ranked together), and either all on the
    canonical zoo or all on other weights (``canonical`` False: an unofficial table)."""

    scenario: str
    pool: str
    fingerprint: str
    protocol: str
    canonical: bool
    entries: list[Entry]
    plots: dict[str, Any] = field(
        default_factory=dict
    )  # "scatter"/"curves" -> rel path; "relevance" -> [...]

    @property
    def slug(self) -> str:
        other = "" if self.canonical else "--other-weights"
        return _slug(f"{self.scenario}--{self.pool}--{self.fingerprint[:8]}--{self.protocol}{other}")

    @property
    def title(self) -> str:
        other = "" if self.canonical else "; unofficial: not the canonical zoo's weights"
        return f"{self.scenario} (pool {self.pool}, scenario {self.fingerprint[:8]}, protocol {self.protocol}{other})"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


# ------------------------------------------------------------------------------------------- inputs


def verified_records(board: str | Path, tasks: TaskTable | None = None) -> dict[str, dict[str, Any]]:
    """``{file name: record}`` of the store, each verified again (names included) and attributed: stored
    under a name submit gives its record. The first problem is a DataError naming the file."""
    tasks = tasks if tasks is not None else load_tasks()
    check_store(board)  # folders, links, stray files: refused, never skipped
    records = load_accepted(board)
    for name, record in records.items():
        others = {n: r for n, r in records.items() if n != name}
        problems = check_record(record, tasks=tasks, min_seeds=1, accepted=others, canonical=False)
        if problems:
            raise DataError(f"{results_dir(board) / name}: {problems[0]}; accepted files must never be edited: "
                            "restore it from version control (or remove it from the store)")  # fmt: skip
        if name not in expected_names(record):
            raise DataError(f"{results_dir(board) / name}: cannot be attributed to its record (`drake submit` "
                            f"stores it as {expected_names(record)[0]}); accepted files are never renamed: "
                            "restore it from version control (or remove it from the store)")  # fmt: skip
    return records


def method_label(info: Mapping[str, Any]) -> str:
    """The method's name, with the named config it ran (``--config fedmosaic-no-rela``, one of the paper's
    ablations) as ``fedmosaic+no-rela``, so an ablation's row never reads as the method itself."""
    from drake.config import named_configs

    name = info["method"]["name"]
    args = shlex.split(info.get("command") or "")
    for flag, value in zip(args, args[1:]):
        if flag == "--config" and value in named_configs():
            return f"{name}+{value.removeprefix(name + '-')}"
    return name


def make_entry(name: str, record: Mapping[str, Any], min_seeds: int = MIN_SEEDS) -> Entry:
    """The row of one verified record; every number is recomputed from its per-seed data."""
    info = record["run_info"]
    summary = recompute_summary(record)
    unseen = unseen_summary(record)
    ok = [s for s in record["results"]["per_seed"] if s["status"] == "success"]
    ratios = [(s.get("extra") or {}).get("compute_ratio_to_local") for s in ok]
    clients = info["scenario"]["spec"]["clients"]
    return Entry(
        file=name,
        method=method_label(info),
        architectures=tuple(
            dict.fromkeys(architecture_name(str(c["model"])) for c in clients if c.get("model"))
        ),
        clients=len(clients),
        stats={**{f"{t}_{s}": dict(summary[t][s]) for t, s in STATS},
               **{k: dict(unseen[k.removeprefix("unseen_")]) for k in UNSEEN_TITLES}},
        comm_up=_mean([s["comm_bytes"]["total_up"] for s in ok]) if ok else None,
        comm_down=_mean([s["comm_bytes"]["total_down"] for s in ok]) if ok else None,
        compute_ratio=_mean([float(r) for r in ratios])
        if ok and all(r is not None for r in ratios)
        else None,
        seeds=tuple(info["seeds"]),
        successful_seeds=len(successful_seeds(record)),
        official=len(successful_seeds(record)) >= min_seeds and not zoo_problems(record),
        config_hash=info["config_hash"],
        created_at=info["created_at"],
        command=info["command"],
        drake_version=info["drake_version"],
        git_commit=info["git_commit"],
        git_dirty=info.get("git_dirty"),
    )


def _rank_key(e: Entry) -> tuple[Any, ...]:
    def desc(v: float | None) -> tuple[int, float]:
        return (1, 0.0) if v is None else (0, -v)

    s = e.stats
    return (desc(s["self_a_last"]["mean"]), desc(s["others_a_last"]["mean"]), desc(s["self_a_auc"]["mean"]),
            e.method, e.file)  # fmt: skip


def rank(records: Mapping[str, Mapping[str, Any]], min_seeds: int = MIN_SEEDS) -> list[Group]:
    """Entries grouped by scenario, protocol and weights (see ``Group``), ranked by Self A_last, then Others
    A_last, then Self A_AUC (higher first); canonical-zoo tables first."""
    groups: dict[tuple[str, str, str, str, bool], list[Entry]] = {}
    for name in sorted(records):
        info = records[name]["run_info"]
        scen = info["scenario"]
        key = (scen["name"], scen["pool"], scen["fingerprint"], table_key(info["protocol"]),
               not zoo_problems(records[name]))  # fmt: skip
        groups.setdefault(key, []).append(make_entry(name, records[name], min_seeds))
    out = []
    for (scenario, pool, fp, protocol, canonical), entries in sorted(groups.items(), key=lambda kv: (not kv[0][4], kv[0])):
        ranked = [replace(e, rank=i) for i, e in enumerate(sorted(entries, key=_rank_key), 1)]
        out.append(Group(scenario, pool, fp, protocol, canonical, ranked))
    return out


# -------------------------------------------------------------------------------------------- plots


def _pct(v: float | None) -> float | None:
    return None if v is None else 100.0 * v


def plot_self_vs_others(entries: Sequence[Entry], path: str | Path, title: str = "") -> Path | None:
    """Scatter of Self A_last (x) against Others A_last (y) in percent, std over seeds as error bars, every
    method labelled without overlaps (``drake.plots.place_labels``); None if no entry has both scores."""
    from drake.plots import Point
    from drake.plots import plot_self_vs_others as plot

    points = [
        Point(e.method, _pct(x["mean"]), _pct(y["mean"]), _pct(x["std"]) or 0.0, _pct(y["std"]) or 0.0, e.official,
              style_index=i)
        for i, e in enumerate(entries)
        for x, y in [(e.stats["self_a_last"], e.stats["others_a_last"])]
        if x["mean"] is not None and y["mean"] is not None
    ]
    return plot(points, path, title=title) if points else None


def plot_cost(entries: Sequence[Entry], path: str | Path, title: str = "") -> Path | None:
    """The paper's cost plot: Self and Others A_last (percent) against training compute relative to Local
    and against MiB communicated per seed, one point per method; None if no entry records a cost."""
    from drake.plots import MIB, CostPoint
    from drake.plots import plot_cost as plot

    points = [
        CostPoint(e.method, _pct(e.stats["self_a_last"]["mean"]), _pct(e.stats["others_a_last"]["mean"]),
                  e.compute_ratio, None if e.comm_total is None else e.comm_total / MIB, e.official)
        for e in entries
    ]  # fmt: skip
    useful = [p for p in points if (p.self_score, p.others_score) != (None, None)
              and (p.compute_ratio, p.comm_mib) != (None, None)]  # fmt: skip
    return plot(points, path, title=title) if useful else None


def mean_relevance(record: Mapping[str, Any]) -> tuple[int, list[int], list[list[float]], int] | None:
    """``(round, clients, matrix, n_seeds)``: the last relevance matrix, averaged over the successful seeds
    whose last matrix has the same round and client order as the first one's; None without relevance."""
    lasts = [
        s["relevance"][-1]
        for s in record["results"]["per_seed"]
        if s["status"] == "success" and s.get("relevance")
    ]
    if not lasts:
        return None
    same = [m for m in lasts if m["round"] == lasts[0]["round"] and m["clients"] == lasts[0]["clients"]]
    n = len(lasts[0]["clients"])
    matrix = [[_mean([m["matrix"][i][j] for m in same]) for j in range(n)] for i in range(n)]
    return lasts[0]["round"], list(lasts[0]["clients"]), matrix, len(same)


def make_plots(groups: Sequence[Group], records: Mapping[str, Mapping[str, Any]], out: Path) -> list[Path]:
    """Write every group's plots under ``out/plots`` and note their relative paths in ``group.plots``.

    One colour per method within a table (its rank order), the same in every plot of that table.
    """
    from drake.plots import plot_learning_curves, plot_relevance

    written = []
    for g in groups:
        g.plots = {"relevance": []}
        scatter = plot_self_vs_others(
            g.entries, out / "plots" / f"{g.slug}--scatter.png", f"{g.scenario}: Self vs Others A_last"
        )
        if scatter is not None:
            written.append(scatter)
            g.plots["scatter"] = f"plots/{scatter.name}"
        curves = plot_learning_curves(
            [records[e.file] for e in g.entries], out / "plots" / f"{g.slug}--curves.png",
            labels=[e.method + ("" if e.official else " (unofficial)") for e in g.entries],
            title=f"{g.scenario}: learning curves",
        )  # fmt: skip
        written.append(curves)
        g.plots["curves"] = f"plots/{curves.name}"
        cost = plot_cost(g.entries, out / "plots" / f"{g.slug}--cost.png", f"{g.scenario}: accuracy vs cost")
        if cost is not None:
            written.append(cost)
            g.plots["cost"] = f"plots/{cost.name}"
        for e in g.entries:
            rel = mean_relevance(records[e.file])
            if rel is None:
                continue
            rnd, clients, matrix, n = rel
            path = out / "plots" / f"{_slug(e.file.removesuffix('.json'))}--relevance.png"
            title = f"{e.method}: relevance at round {rnd} (mean of {n} seed{'s' if n != 1 else ''})"
            written.append(plot_relevance(matrix, path, clients=clients, title=title))
            g.plots["relevance"].append({"file": e.file, "method": e.method, "plot": f"plots/{path.name}"})
    return written


def figures(g: Group) -> list[tuple[str, str, str]]:
    """``(path, alt text, caption)`` of a table's plots, in page order (the same in Markdown and HTML)."""
    from drake.plots import MAX_OVERLAID

    out = []
    if "scatter" in g.plots:
        out.append((g.plots["scatter"], "Self vs Others A_last",
                    "Self vs Others: each method's Self A_last (own tasks) against its Others A_last (other "
                    "clients' tasks), in %, mean over seeds with the std over seeds as error bars; hollow "
                    "markers are unofficial entries."))  # fmt: skip
    out.append((g.plots["curves"], "Learning curves",
                "Learning curves: A per round (Self and Others, in %, mean over clients and seeds; band: std over "
                "seeds); dotted lines mark where a dynamic scenario's clients switch to their next task. With "
                f"more than {MAX_OVERLAID} methods, one panel per method, its Self against every other method's "
                "Self in grey."))  # fmt: skip
    if "cost" in g.plots:
        out.append((g.plots["cost"], "Accuracy vs cost",
                    "Accuracy vs cost (the paper's cost plot): Self (circle) and Others (triangle) A_last in % "
                    "against training compute relative to Local and against MiB communicated per seed (up + "
                    "down), one point per method."))  # fmt: skip
    for r in g.plots["relevance"]:
        out.append((r["plot"], f"Relevance: {r['method']}",
                    f"{r['method']}'s relevance heatmap ({r['file']}): row i is how much client i's "
                    "customised global model draws on client j (RELA weights, mean over seeds)."))  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------ formats


def fmt_stat(cell: Mapping[str, Any]) -> str:
    """A score in percent, as the run summary and the README print it: ``38.7 ± 0.4``."""
    if cell["mean"] is None:
        return "-"
    mean = f"{100 * cell['mean']:.1f}"
    return f"{mean} ± {100 * cell['std']:.1f}" if cell["std"] is not None else mean


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):  # binary, as the run summary and plots
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def fmt_seeds(e: Entry) -> str:
    failed = len(e.seeds) - e.successful_seeds
    return f"{e.successful_seeds}" + (f" (+{failed} failed)" if failed else "")


def _meta(
    groups: Sequence[Group], records: Mapping[str, Mapping[str, Any]], min_seeds: int
) -> dict[str, Any]:
    times = sorted(r["run_info"]["created_at"] for r in records.values())
    return {"files": len(records), "latest": times[-1] if times else None, "min_seeds": min_seeds,
            "entries": sum(len(g.entries) for g in groups)}  # fmt: skip


#: above each table's commands; the exact stored command is in leaderboard.csv / .json and the result file
REPRODUCE = ("Reproduce an entry: check out its commit, run its command (the stored one, into runs/ and without "
             "--resume), then `drake submit --check` the new file")
COLUMNS = (
    "rank",
    "method",
    "architectures",
    *STAT_TITLES.values(),
    "comm / seed",
    "compute vs local",
    "seeds",
    "official",
    *UNSEEN_TITLES.values(),
)


def _cells(e: Entry) -> list[str]:
    return [str(e.rank), e.method, ", ".join(e.architectures), *(fmt_stat(e.stats[k]) for k in STAT_TITLES),
            fmt_bytes(e.comm_total), fmt_ratio(e.compute_ratio), fmt_seeds(e), "yes" if e.official else "no",
            *(fmt_stat(e.stats[k]) for k in UNSEEN_TITLES)]  # fmt: skip


def _md(text: str) -> str:
    """Text in a Markdown table or line: names are plain (checked), so only a pipe needs escaping."""
    return text.replace("|", "\\|")


def _md_code(text: str) -> str:
    """A Markdown code span that holds ``text`` whatever backticks it contains (no way out of the span)."""
    text = " ".join(text.split())  # one line: a newline would end the list item
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or fence != "`" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _intro(meta: Mapping[str, Any]) -> str:
    latest = f" (newest run: {meta['latest']})" if meta["latest"] else ""
    return (f"Built by `drake leaderboard build` from {meta['files']} accepted result file(s){latest}. Every number "
            "is recomputed from the per-seed, per-client data in those files; rebuild rather than edit. Scores in %, "
            f"mean ± std over seeds; entries with fewer than {meta['min_seeds']} successful seeds are unofficial. One table per "
            "scenario and evaluation protocol (two protocols are never ranked together); entries on other weights "
            "than the canonical zoo sit in unofficial tables of their own. Comm is bytes "
            "up + down per seed; compute is the measured ratio to the `local` method where the result records it.")  # fmt: skip


def render_markdown(groups: Sequence[Group], meta: Mapping[str, Any]) -> str:
    lines = ["# DRAKE leaderboard", "", _intro(meta), ""]
    if not groups:
        lines += ["No accepted results yet: see `leaderboard/README.md` to submit one.", ""]
    for g in groups:
        lines += [f"## {_md(g.title)}", "", "| " + " | ".join(COLUMNS) + " |",
                  "|" + "|".join("---:" if c in ("rank", "comm / seed", "compute vs local", "seeds") else "---" for c in COLUMNS) + "|"]  # fmt: skip
        lines += ["| " + " | ".join(_md(c) for c in _cells(e)) + " |" for e in g.entries]
        lines.append("")
        for src, alt, caption in figures(g):
            lines += [f"![{_md(alt)}]({src})", "", f"*{_md(caption)}*", ""]
        lines += [REPRODUCE + ":", ""]
        lines += [
            f"- #{e.rank} **{_md(e.method)}** `{e.config_hash[:8]}` ({_md(e.file)}, {_md(e.code)}): {_md_code(e.rerun)}"
            for e in g.entries
        ]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


CSV_FIELDS = ("scenario", "pool", "scenario_fingerprint", "protocol", "canonical_zoo", "rank", "method", "architectures",
              *(f"{k}_{s}" for k in (*STAT_TITLES, *UNSEEN_TITLES) for s in ("mean", "std", "worst_client")),
              "comm_up_bytes", "comm_down_bytes", "compute_ratio_to_local", "seeds", "successful_seeds", "official",
              "config_hash", "file", "created_at", "drake_version", "git_commit", "git_dirty", "command")  # fmt: skip


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def render_csv(groups: Sequence[Group]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for g in groups:
        for e in g.entries:
            row = {"scenario": g.scenario, "pool": g.pool, "scenario_fingerprint": g.fingerprint,
                   "protocol": g.protocol, "canonical_zoo": g.canonical, "rank": e.rank,
                   "method": e.method, "architectures": " ".join(e.architectures), "comm_up_bytes": e.comm_up,
                   "comm_down_bytes": e.comm_down, "compute_ratio_to_local": e.compute_ratio,
                   "seeds": " ".join(map(str, e.seeds)), "successful_seeds": e.successful_seeds, "official": e.official,
                   "config_hash": e.config_hash, "file": e.file, "created_at": e.created_at,
                   "drake_version": e.drake_version, "git_commit": e.git_commit, "git_dirty": e.git_dirty,
                   "command": e.command}  # fmt: skip
            for k in (*STAT_TITLES, *UNSEEN_TITLES):
                for s in ("mean", "std", "worst_client"):
                    row[f"{k}_{s}"] = e.stats[k][s]
            for f in ("comm_up_bytes", "comm_down_bytes"):  # whole bytes print as integers
                row[f] = int(row[f]) if row[f] is not None and float(row[f]).is_integer() else row[f]
            writer.writerow([_csv_value(row[f]) for f in CSV_FIELDS])
    return buf.getvalue()


def render_json(groups: Sequence[Group], meta: Mapping[str, Any]) -> str:
    doc = {
        "format": FORMAT, "version": FORMAT_VERSION, "min_seeds": meta["min_seeds"], "files": meta["files"],
        "latest_created_at": meta["latest"],
        "scenarios": [{"scenario": g.scenario, "pool": g.pool, "fingerprint": g.fingerprint, "protocol": g.protocol,
                       "canonical_zoo": g.canonical, "plots": g.plots,
                       "entries": [e.to_dict() for e in g.entries]} for g in groups],
    }  # fmt: skip
    return json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n"


# --------------------------------------------------------------------------------------------- html

CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1440px;
       padding: 1rem 1.5rem 3rem; color: #1d2330; background: #fff; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem; }
p.intro { color: #4a5263; max-width: 70rem; }
.scroll { overflow-x: auto; }
table.lb { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; font-size: 14px; }
table.lb th, table.lb td { padding: .35rem .55rem; border-bottom: 1px solid #e3e6ec; text-align: left; white-space: nowrap; }
table.lb td.num, table.lb th.num { text-align: right; }
table.lb thead th { background: #f3f5f9; cursor: pointer; user-select: none; position: sticky; top: 0; }
table.lb thead th:hover, table.lb thead th:focus { background: #e6eaf2; outline: none; }
table.lb thead th::after { content: " \\2195"; color: #a0a7b4; font-size: .8em; }
table.lb thead th[aria-sort=ascending]::after { content: " \\25B2"; color: #1d2330; }
table.lb thead th[aria-sort=descending]::after { content: " \\25BC"; color: #1d2330; }
table.lb tbody tr:nth-child(even) { background: #fafbfd; }
tr.unofficial td { color: #7a8293; }
.figs { display: flex; flex-wrap: wrap; gap: 1rem; margin-top: 1rem; }
.figs figure { margin: 0; display: table; } .figs img { max-width: 100%; border: 1px solid #e3e6ec; }
figcaption { font-size: 13px; color: #4a5263; display: table-caption; caption-side: bottom; padding-top: .3rem; }
details { margin-top: .8rem; } code { font-size: 12.5px; background: #f3f5f9; padding: 0 .25rem; }
"""
JS = """
(function () {
  function sortBy(table, th, col) {
    var current = th.getAttribute("aria-sort");
    var num = th.getAttribute("data-type") === "num";
    var asc = current ? current === "descending" : !num;
    Array.prototype.forEach.call(th.parentNode.cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].getAttribute("data-v"), y = b.cells[col].getAttribute("data-v");
      var tie = Number(a.getAttribute("data-rank")) - Number(b.getAttribute("data-rank"));
      if (x === "" || y === "") { return x === y ? tie : (x === "" ? 1 : -1); }
      var d = num ? Number(x) - Number(y) : x.localeCompare(y);
      return (asc ? d : -d) || tie;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.lb"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(table, th, col); });
      th.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sortBy(table, th, col); }
      });
    });
  });
})();
"""


def _code(escaped: str) -> str:
    """Markdown `code` spans of already escaped text as <code> elements."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _num(v: float | int | None) -> str:
    return "" if v is None else repr(float(v))


def _html_row(e: Entry) -> str:
    esc = html.escape
    values: list[tuple[str, str, bool]] = [
        (str(e.rank), _num(e.rank), True),
        (e.method, e.method, False),
        (", ".join(e.architectures), ", ".join(e.architectures), False),
        *((fmt_stat(e.stats[k]), _num(_pct(e.stats[k]["mean"])), True) for k in STAT_TITLES),
        (fmt_bytes(e.comm_total), _num(e.comm_total), True),
        (fmt_ratio(e.compute_ratio), _num(e.compute_ratio), True),
        (fmt_seeds(e), _num(e.successful_seeds), True),
        ("yes" if e.official else "no", "yes" if e.official else "no", False),
        *((fmt_stat(e.stats[k]), _num(_pct(e.stats[k]["mean"])), True) for k in UNSEEN_TITLES),
    ]
    tds = "".join(
        f'<td{" class=num" if num else ""} data-v="{esc(v)}">{esc(text)}</td>' for text, v, num in values
    )
    cls = "" if e.official else ' class="unofficial"'
    title = esc(f"{e.file} (config {e.config_hash})", quote=True)
    return f'<tr{cls} data-rank="{e.rank}" title="{title}">{tds}</tr>'


def _html_group(g: Group) -> str:
    esc = html.escape
    numeric = {"rank", *STAT_TITLES.values(), *UNSEEN_TITLES.values(), "comm / seed", "compute vs local", "seeds"}
    heads = "".join(
        f'<th scope="col" data-key="{_slug(c)}" data-type="{"num" if c in numeric else "text"}"'
        f"{' class=num' if c in numeric else ''}>{esc(c)}</th>"
        for c in COLUMNS
    )
    rows = "\n".join(_html_row(e) for e in g.entries)
    fig_html = "\n".join(
        f'<figure><img src="{esc(src)}" alt="{esc(alt)}"><figcaption>{esc(cap)}</figcaption></figure>'
        for src, alt, cap in figures(g)
    )
    cmds = "\n".join(f"<li>#{e.rank} <b>{esc(e.method)}</b> <code>{esc(e.config_hash[:8])}</code> "
                     f"({esc(e.file)}, {esc(e.code)}): <code>{esc(e.rerun)}</code></li>" for e in g.entries)  # fmt: skip
    return (f'<section id="{esc(g.slug)}">\n<h2>{esc(g.title)}</h2>\n'
            f'<div class="scroll"><table class="lb" id="table-{esc(g.slug)}">\n<thead><tr>{heads}</tr></thead>\n'
            f'<tbody>\n{rows}\n</tbody>\n</table></div>\n'
            f'<div class="figs">\n{fig_html}\n</div>\n'
            f"<details><summary>{esc(REPRODUCE)}</summary>\n<ul>\n{cmds}\n</ul></details>\n"
            "</section>")  # fmt: skip


def render_html(groups: Sequence[Group], meta: Mapping[str, Any]) -> str:
    """A self-contained page: inline CSS and JS, plots as files beside it, no request leaves the folder."""
    body = (
        "\n".join(_html_group(g) for g in groups)
        or "<p>No accepted results yet: see leaderboard/README.md to submit one.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>DRAKE leaderboard</title>
<style>{CSS}</style>
</head>
<body>
<h1>DRAKE leaderboard</h1>
<p class="intro">{_code(html.escape(_intro(meta)))} Click a column header to sort.</p>
{body}
<script>{JS}</script>
</body>
</html>
"""


# -------------------------------------------------------------------------------------------- build

OUTPUTS = ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "index.html")


def build(
    board: str | Path,
    out: str | Path | None = None,
    *,
    tasks: TaskTable | None = None,
    min_seeds: int = MIN_SEEDS,
) -> list[Path]:
    """Verify the store, rank, plot and render; returns the files written (plots included).

    ``out`` defaults to ``<board>/site``. Plots left over from an earlier build are removed, so ``out``
    holds exactly what these inputs produce.
    """
    out = Path(out) if out is not None else Path(board) / "site"
    records = verified_records(board, tasks)
    groups = rank(records, min_seeds)
    plots = make_plots(groups, records, out)
    keep = {p.name for p in plots}
    for stale in (out / "plots").glob("*.png") if (out / "plots").is_dir() else ():
        if stale.name not in keep:
            stale.unlink()
    meta = _meta(groups, records, min_seeds)
    texts = {"leaderboard.md": render_markdown(groups, meta), "leaderboard.csv": render_csv(groups),
             "leaderboard.json": render_json(groups, meta), "index.html": render_html(groups, meta)}  # fmt: skip
    return [atomic_write_text(out / name, texts[name]) for name in OUTPUTS] + sorted(plots)
