"""A scenario's client streams as a config: per client, its train rows in arrival order (``drake.data.stream``'s
schedule), with ``round``, ``stage`` and ``source_id`` columns. Cut from a build's train files, synth or real.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from drake.data.manifest import Manifest
from drake.data.schema import FORMAT_VERSION, row_features, stream_features
from drake.data.write import install_config
from drake.spec import ScenarioSpec, fingerprint


def _stream_tables(
    root: Path, scenario: ScenarioSpec, manifest: Manifest, seed: int
) -> dict[str, Callable[[Path], int]]:
    """One writer per client: its arrival-ordered rows with round, stage and source_id columns."""
    from drake.data.stream import round_schedule, stage_index

    features, stream = row_features(), stream_features()
    sources: dict[str, pa.Table] = {}

    def source(task: str) -> pa.Table:
        if task not in sources:
            sources[task] = pq.read_table(root / manifest.tasks[task]["files"]["train"]["path"])
        return sources[task]

    def writer(client: Any) -> Callable[[Path], int]:
        def write(path: Path) -> int:
            schedule = round_schedule(client, scenario, manifest.train_sizes(), seed)
            offsets, parts, total = {}, [], 0
            for task in client.tasks:  # one table holding the client's train rows; one take in arrival order
                offsets[task] = total
                parts.append(source(task).select(list(features)).cast(features.arrow_schema))
                total += len(parts[-1])
            order = [(r, offsets[task] + i) for r, items in enumerate(schedule) for task, i in items]
            table = pa.concat_tables(parts).take(pa.array([g for _, g in order], pa.int64()))
            table = table.rename_columns(["source_id", *table.column_names[1:]])
            ids = [f"{scenario.name}-client_{client.id}-{k:05d}" for k in range(len(table))]
            table = table.append_column("id", pa.array(ids, pa.string()))
            table = table.append_column("round", pa.array([r for r, _ in order], pa.int32()))
            table = table.append_column(
                "stage", pa.array([stage_index(client, r) for r, _ in order], pa.int32())
            )
            pq.write_table(table.select(list(stream)).cast(stream.arrow_schema), path)
            return len(table)

        return write

    return {f"client_{c.id}": writer(c) for c in scenario.clients}


def build_scenario(root: Path, scenario: ScenarioSpec, manifest: Manifest, seed: int, force: bool) -> None:
    """Write ``scenario``'s client streams under ``root`` unless fresh, recording them in ``manifest``
    (``manifest.tasks`` must hold every task of the scenario)."""
    key = fingerprint(
        [
            FORMAT_VERSION,
            scenario.fingerprint(),
            seed,
            {t: manifest.tasks[t]["files"]["train"]["sha256"] for t in scenario.tasks},
        ]
    )
    if not force and manifest.fresh(manifest.scenarios.get(scenario.name), key):
        manifest.status[scenario.name] = "cached"
        return
    files = install_config(root, scenario.name, _stream_tables(root, scenario, manifest, seed))
    manifest.scenarios[scenario.name] = {
        "kind": "scenario",
        "key": key,
        "mode": scenario.mode,
        "seed": seed,
        "files": files,
    }
    manifest.status[scenario.name] = "built"
