"""Where does a zoo member lose what a task needs: in the frozen tower, the projector, or the text model?

For each single-image question kind of the public split (and the VSR / Bongard-HOI interactions of the
tasks), a linear probe (multinomial logistic regression) is fit on public *train* images and scored on
public *test* images, from three inputs: the raw pixels, the frozen tower's outputs (the layer the projector
reads) and the member's projector outputs. Beside it, the member's own held-out accuracy on that kind (its
pre-training record).
A kind the projector holds but the member does not answer is lost in the text model, not in the tower.
Writes ``benchmarks/results/feature_probes.json``.

    python benchmarks/feature_probes.py                          # tiny-llama-m, ~1.3 min on 2 cores
    python benchmarks/feature_probes.py --models tiny-llama-m /path/to/other/member
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drake.data.synth.families.bongard import action_scene, draw_scene  # noqa: E402
from drake.data.synth.families.compare import SPATIAL  # noqa: E402
from drake.data.synth.public import public_context, public_sample  # noqa: E402
from drake.fl.assemble import set_threads  # noqa: E402
from drake.io import atomic_write_json  # noqa: E402
from drake.models.loading import LoadedModel, load_model  # noqa: E402

PUBLIC_KINDS = ("color", "shape", "texture", "garment", "position", "count", "relation")
INTERACTION = "interaction"  # VSR's in / on / next to / behind, drawn as the tasks draw them
IMAGE_SIZE = 32  # the zoo's input size
Items = list[tuple[Image.Image, str]]  # (picture, label)


def public_items(split: str, n: int) -> dict[str, Items]:
    """``n`` one-image public samples per kind of ``split``, labelled by their answer."""
    out: dict[str, Items] = {k: [] for k in PUBLIC_KINDS}
    for i in range(200 * n):
        s = public_sample(public_context(split, i))
        kind = s.meta.get("qtype")
        if kind in out and len(s.images) == 1 and len(out[kind]) < n:
            out[kind].append((s.images[0], s.answer))
        if all(len(v) == n for v in out.values()):
            return out
    raise RuntimeError(f"public {split} split: fewer than {n} one-image samples of some kind")


def interaction_items(split: str, n: int) -> Items:
    """``n`` pictures of VSR's relations in turn, labelled by the caption word (in, on, next to, behind)."""
    rng = random.Random(f"feature-probes|{split}")
    words = list(SPATIAL)
    said = [words[i % len(words)] for i in range(n)]
    return [(draw_scene(action_scene(rng, SPATIAL[word]), IMAGE_SIZE), word) for word in said]


def features(loaded: LoadedModel, images: list[Image.Image]) -> Iterator[tuple[str, torch.Tensor]]:
    """(input name, one flat row per image) for pixels, the tower layer the projector reads, and projector outputs."""
    model, config = loaded.model, loaded.model.config
    pixels = loaded.processor.image_processor(images, return_tensors="pt")["pixel_values"].to(loaded.dtype)
    with torch.no_grad():  # one tower pass: the outputs carry the hidden states the projector was fed
        out = model.get_image_features(pixel_values=pixels, output_hidden_states=True)
    tower = out.hidden_states[config.vision_feature_layer]
    if config.vision_feature_select_strategy == "default":
        tower = tower[:, 1:]  # the CLS token the projector never sees
    yield "pixels", pixels.flatten(1).float()
    yield "tower", tower.flatten(1).float()
    yield "projector", torch.stack(list(out.pooler_output)).flatten(1).float()


def linear_probe(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, steps: int = 300
) -> float:
    """Test accuracy of an L2-regularised logistic regression (full batch, Adam) on standardised inputs."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-5
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    k = int(y_train.max()) + 1
    w = torch.zeros(x_train.shape[1], k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x_train @ w + b, y_train) + 1e-3 * w.pow(2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((x_test @ w + b).argmax(1) == y_test).float().mean())


def probe_member(name: str, n_train: int, n_test: int) -> dict[str, dict[str, float]]:
    loaded = load_model(name, device="cpu", progress=False)
    record = loaded.meta.get("heldout_accuracy", {})
    train, test = public_items("train", n_train), public_items("test", n_test)
    train[INTERACTION], test[INTERACTION] = (
        interaction_items("train", n_train),
        interaction_items("test", n_test),
    )
    rows: dict[str, dict[str, float]] = {}
    for kind in train:
        labels = sorted({y for _, y in train[kind]} | {y for _, y in test[kind]})
        y_tr = torch.tensor([labels.index(y) for _, y in train[kind]])
        y_te = torch.tensor([labels.index(y) for _, y in test[kind]])
        feats_tr = dict(features(loaded, [im for im, _ in train[kind]]))
        feats_te = dict(features(loaded, [im for im, _ in test[kind]]))
        row = {"classes": len(labels), "majority": float(torch.bincount(y_te).max()) / len(y_te)}
        for inp in feats_tr:
            torch.manual_seed(0)
            row[inp] = linear_probe(feats_tr[inp], y_tr, feats_te[inp], y_te)
        if kind in record:
            row["member"] = record[kind]
        rows[kind] = row
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["tiny-llama-m"], help="zoo members or local folders")
    ap.add_argument("--n-train", type=int, default=1200, help="probe training images per kind")
    ap.add_argument("--n-test", type=int, default=400, help="probe test images per kind")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/feature_probes.json"), help="the table (JSON)")
    args = ap.parse_args(argv)
    if min(args.n_train, args.n_test) < 8:
        ap.error(f"--n-train and --n-test must be >= 8, got {args.n_train} and {args.n_test}")
    set_threads(args.threads)
    argv = sys.argv[1:] if argv is None else argv  # the command that made the table, also when called with argv
    result = {"command": shlex.join(["python", "benchmarks/feature_probes.py", *argv]), "models": {}}
    for name in args.models:
        rows = probe_member(name, args.n_train, args.n_test)
        result["models"][name] = rows
        print(f"\n{name}: linear-probe test accuracy by input, member = its own held-out answer accuracy")
        print(
            f"{'kind':12s} {'classes':>7s} {'major.':>7s} {'pixels':>7s} {'tower':>7s} {'project.':>8s} {'member':>7s}"
        )
        for kind, r in rows.items():
            member = f"{r['member']:7.2f}" if "member" in r else "      -"
            print(
                f"{kind:12s} {r['classes']:7d} {r['majority']:7.2f} {r['pixels']:7.2f} {r['tower']:7.2f} "
                f"{r['projector']:8.2f} {member}"
            )
    atomic_write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
