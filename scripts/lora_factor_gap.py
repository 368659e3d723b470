"""How much of the clients' LoRA updates survives averaging the factors A and B separately (docs/results.md).

FedAvg and FedMosaic's customised global G_i (at its non-PQ layers) average LoRA factor by factor, as their
papers do: the mixed update is mean(B) mean(A), not mean(B A). The two agree while the clients' factors are
close. This reads a run's last checkpoint (``<out>/<result stem>.work/seed<N>/checkpoint.pt``) and prints, per
client, the mixed update of the adapters it receives next to the mix of the updates themselves, over every
LoRA layer with trainable A and B:

- kept: ||mean(B) mean(A)|| / ||mean(B A)|| (Frobenius over the layers; 1 = nothing lost in norm),
- cos: cosine between the two (1 = same direction).

FedMosaic: G_i's LoRA layers mix the last uploads of the other clients of i's architecture with the last
round's relevance weights. FedAvg: the average of the last round's post-local adapters of each architecture
(equal weights; every client trains the same number of examples a round).

    python scripts/lora_factor_gap.py RUN_DIR/fedmosaic--...work/seed0/checkpoint.pt [more checkpoints]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from drake.report import table  # noqa: E402

#: the key suffixes of a LoRA layer's (A, B): FedMosaic's dual-LoRA layers and peft's
FACTORS = ((".pqlora_A.default", ".pqlora_B.default"), (".lora_A.default.weight", ".lora_B.default.weight"))


def lora_pairs(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Layer -> (A, B) for every layer of ``state`` with both factors (FedMosaic's PQ layers have neither)."""
    out = {}
    for a_suffix, b_suffix in FACTORS:
        for key in state:
            if key.endswith(a_suffix):
                layer = key[: -len(a_suffix)]
                if layer + b_suffix in state:
                    out[layer] = (state[key].double(), state[layer + b_suffix].double())
    return out


def gap(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> tuple[float, float]:
    """(kept, cos) of mean(B) mean(A) against mean(B A) over the layers, ``weights`` renormalised."""
    total = sum(weights)
    w = [x / total for x in weights]
    pairs = [lora_pairs(s) for s in states]
    dot = fac_sq = exact_sq = 0.0
    for layer in pairs[0]:
        a_bar = sum(wj * p[layer][0] for wj, p in zip(w, pairs))
        b_bar = sum(wj * p[layer][1] for wj, p in zip(w, pairs))
        fac = b_bar @ a_bar
        exact = sum(wj * (p[layer][1] @ p[layer][0]) for wj, p in zip(w, pairs))
        dot += float((fac * exact).sum())
        fac_sq += float((fac * fac).sum())
        exact_sq += float((exact * exact).sum())
    return math.sqrt(fac_sq / exact_sq), dot / math.sqrt(fac_sq * exact_sq)


def signature(state: Mapping[str, torch.Tensor]) -> tuple:
    """The LoRA layers and their shapes: equal for clients of one architecture."""
    return tuple(sorted((k, tuple(a.shape), tuple(b.shape)) for k, (a, b) in lora_pairs(state).items()))


def rows_of(checkpoint: Path) -> list[list[str]]:
    blob = torch.load(checkpoint, weights_only=False)
    server, clients = blob["server"], blob["clients"]
    uploads = server.method_state.get("locals")
    rows = []
    if uploads is not None:  # FedMosaic: G_i from the other clients' last uploads, relevance-weighted
        ids = sorted(uploads)
        relevance = server.method_state["relevance"]
        arch = {cid: signature(uploads[cid]) for cid in ids}
        for i, cid in enumerate(ids):
            same = [(uploads[j], relevance[i][k]) for k, j in enumerate(ids) if j != cid and arch[j] == arch[cid]]
            kept, cos = gap([s for s, _ in same], [w for _, w in same]) if same else (math.nan, math.nan)
            rows.append([str(cid), str(len(same)), f"{kept:.3f}", f"{cos:.3f}"])
    else:  # FedAvg: the per-architecture average of the last round's post-local adapters
        groups: dict[tuple, list[int]] = {}
        for cid, st in clients.items():
            groups.setdefault(signature(st.adapter), []).append(cid)
        for members in groups.values():
            kept, cos = gap([clients[c].adapter for c in members], [1.0] * len(members))
            rows.append([",".join(map(str, sorted(members))), str(len(members)), f"{kept:.3f}", f"{cos:.3f}"])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint.pt of finished runs")
    args = p.parse_args(argv)
    for path in args.checkpoints:
        print(f"\n{path}")
        print(table(("client(s)", "mixed", "kept", "cos"), rows_of(path)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
