"""The real-DRAKE converter (``drake build --source drake --from DIR``) on a release written here byte-compatible
with the SNUMPR/DRAKE layout (drake_format.md): ``dataset/<D>/{train,test}/dataset-<k>.json`` dumped with
``indent=4``, image paths from the repo root, a plain-string ``image``, int ids, an int gold answer, multi-image
rows and one task for every prompt/choice format the notes describe.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import pytest
from PIL import Image

import drake.data.build as B
from drake.cli import main
from drake.data.read import load_task_split
from drake.data.schema import FORMAT_VERSION
from drake.data.sources import drake_release as R
from drake.errors import DataError
from drake.spec import load_tasks

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TASKS = load_tasks()
I = "<image>"  # noqa: E741


@dataclass(frozen=True)
class Fmt:
    """One fixture task: where its files go and ``make(i) -> (prompt, gold as stored, expected choices)``."""

    dataset: str
    subset: int
    folder: str
    ext: str
    n_images: int
    make: Callable[[int], tuple[str, Any, list[str] | None]]
    str_image: bool = False  # Co-Instruct-DB 0/1 store `image` as a plain string
    int_ids: bool = False


def _cycle(options: list[str], i: int) -> str:
    return options[i % len(options)]


DIGITS = [str(k) for k in range(7)]
POS_NEG = ["Positive", "Negative"]
ACTIONS = ["hold", "ride", "sit_on", "wash"]
PHRASES = ["spill the beans", "break the ice", "easy come, easy go"]
COMPARE = ["First image", "Second image", "None of the images", "Both images"]
FORMATS: dict[str, Fmt] = {
    # DEMON-derived: instruction + context with a quoted "Choice List:[..]" + the DRAKE-appended list; int gold
    "fashion200k_0": Fmt("Fashion200K", 0, "full/images", "jpg", 5, lambda i: (
        "Dress or any top with pants can combine a suit. Q:How many suit can the following five pictures "
        f"combine?  You must choose your answer from the Choice List. {I * 5}Choice List:['0','1','2','3','4',"
        "'5','6'] Your answer is:\nChoice list:[0, 1, 2, 3, 4, 5, 6]. Your answer is:", i % 7, DIGITS), int_ids=True),
    "nlvr2_0": Fmt("NLVR2", 0, "full/images", "png", 2, lambda i: (
        f"Judge the relation.{I}{I}Relation: None of the {i} gloves pictured are blackChoice List:['True',"
        "'False']Answer: \nChoice list:[True, False]. Your answer is:", _cycle(["True", "False"], i),
        ["True", "False"]), int_ids=True),
    "magicbrush_0": Fmt("MagicBrush", 0, "images", "png", 2, lambda i: (
        f"Image A: {I} Image B: {I}\nIs 'add a hat {i}' the edit from A to B or from B to A?\n"
        "Choice list:[A to B, B to A].", _cycle(["A to B", "B to A"], i), ["A to B", "B to A"])),
    "irfl_1": Fmt("IRFL", 1, "images", "jpeg", 4, lambda i: (
        f"Image A: {I}, Image B: {I}, Image C: {I}, Image D: {I}\nWhich image shows 'break the ice' ({i})?\n"
        "Choice list:[Image A, Image B, Image C, Image D]. Your answer is:", _cycle(list("ABCD"), i),
        None)),  # expected filled below
    "irfl_3": Fmt("IRFL", 3, "images", "jpeg", 1, lambda i: (
        f"{I}\nWhich phrase does the image depict ({i})?\nChoice list:[spill the beans,break the ice,easy come, "
        "easy go]. Your answer is:", _cycle(PHRASES, i), PHRASES)),
    "bongard_hoi_0": Fmt("Bongard-HOI", 0, "hake/images", "jpg", 7, lambda i: (
        f"Positive: {I * 3}\nNegative: {I * 3}\nQuery: {I}\nGiven 3 \"positive\" images and 3 \"negative\" "
        f"images ({i}), please determine whether it belongs to \"positive\" or \"negative\".\n"
        "Choice list:[Positive, Negative]. Your answer is:", _cycle(POS_NEG, i), POS_NEG)),
    "bongard_hoi_1": Fmt("Bongard-HOI", 1, "hake/images", "jpg", 6, lambda i: (
        f"{I * 6}\nWhich action do all six images share ({i})?\nChoice List: [hold, ride, sit_on, wash]",
        _cycle(ACTIONS, i + 2), ACTIONS)),
    "comics_0": Fmt("COMICS_Dialogue", 0, "full/images", "jpg", 3, lambda i: (
        f"{I}{I}{I}\nWhat is said next ({i})?\nChoice list:[A: Run!| B: Hello there, friend.| C: No way]. "
        "Answer with the option's letter from the given choices directly. Your answer is:",
        _cycle(list("ABC"), i), list("ABC"))),
    "coinstruct_0": Fmt("Co-Instruct-DB", 0, "images", "jpg", 1, lambda i: (
        f"{I}\nHow is the clarity of this image ({i})?\nA. High\nB. Medium\nC. Low\n"
        "Answer with the option's letter from the given choices directly.", _cycle(list("ABC"), i),
        list("ABC")), str_image=True),
    "coinstruct_2": Fmt("Co-Instruct-DB", 2, "images", "jpg", 2, lambda i: (
        f"The first image: {I}\nThe second image: {I}\nWhich image is sharper ({i})?\nChoice list:[First image, "
        "Second image, None of the images, Both images]. You must choose your answer from the Choice List. ",
        _cycle(COMPARE, i), COMPARE)),
    "seedbench2_0": Fmt("SEED-Bench-2", 0, "SEED-Bench-2-image", "jpg", 1, lambda i: (
        f"Answer the following question.\n{I}\nHow many cars are there ({i})?\nA. 1\nB. 2\nC. 3\nD. 4\n"
        "Answer with the option's letter from the given choices directly.", _cycle(list("ABCD"), i),
        list("ABCD")), int_ids=True),
    "iconqa_0": Fmt("iconqa", 0, "images", "png", 1, lambda i: (
        f"{I}\nHow many dots are on the frame ({i})?\nChoice list:[5, 7, 6]. Your answer is:",
        _cycle(["5", "7", "6"], i), ["5", "7", "6"])),
    "iconqa_2": Fmt("iconqa", 2, "images", "png", 1, lambda i: (
        f"{I}\nHow many flowers are there ({i})? Answer with a single word or a number. ", str(i + 3), None)),
    "wcvqa_0": Fmt("WCVQA", 0, "images", "jpg", 1, lambda i: (
        f"{I}\nWhat is the name of this dish ({i})?\n1. Pho\n2. Ramen\n3. Udon\n4. Laksa\n5. Soba\n"
        "Print only the answer with a single answer id.", str(i % 5 + 1), ["1", "2", "3", "4", "5"])),
    # unseen tasks
    "dreamsim_0": Fmt("DreamSim", 0, "nights", "png", 3, lambda i: (
        f"Image A:{I} Ref Image:{I} Image B:{I}\nWhich image is more similar to the reference ({i})?\n"
        "Choice list:[Image A, Image B]. Your answer is:", _cycle(["Image A", "Image B"], i),
        ["Image A", "Image B"]), int_ids=True),
    "imagecode_0": Fmt("imagecode", 0, "images", "png", 4, lambda i: (
        f"Image 1: {I}, Image 2: {I}, Image 3: {I}, Image 4: {I}\nWhich image matches 'a man waving' ({i})?\n"
        "Choice list:[Image 1, Image 2, Image 3, Image 4]. Your answer is:", f"Image {i % 4 + 1}",
        ["Image 1", "Image 2", "Image 3", "Image 4"])),
}  # fmt: skip
IRFL_1 = ["Image A", "Image B", "Image C", "Image D"]
SIZES = {"train": 3, "test": 2}
# nlvr2_0 train also holds a row whose placeholders cannot match (dropped) and one without any (prepended)
NLVR2_EXTRA = [(f"{I}{I}{I} three tags, two images Choice list:[True, False].", "True"),
               ("no tags at all Choice list:[True, False].", "False")]  # fmt: skip


def _expected(task: str, i: int) -> tuple[str, str, list[str] | None]:
    prompt, gold, choices = FORMATS[task].make(i)
    if task == "irfl_1":
        gold, choices = f"Image {gold}", IRFL_1
    return prompt, str(gold), choices


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256)
    Image.new("RGB", (8, 8), color).save(path)


def _sample(task: str, fmt: Fmt, split: str, i: int, prompt: str, gold: Any, n_images: int) -> dict[str, Any]:
    paths = [f"dataset/{fmt.dataset}/{fmt.folder}/{task}_{split}_{i}_{k}.{fmt.ext}" for k in range(n_images)]
    return {
        "id": i if fmt.int_ids else f"{task}-{i}",
        "image": paths[0] if fmt.str_image else paths,
        "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": gold}],
    }


def write_release(base: Path, tasks: list[str]) -> Path:
    """The release for ``tasks`` under ``base/dataset/`` (the official repo layout); returns ``base``."""
    seed = 0
    for task in tasks:
        fmt = FORMATS[task]
        for split, n in SIZES.items():
            samples = []
            for i in range(n):
                prompt, gold, _ = fmt.make(i)
                samples.append(_sample(task, fmt, split, i, prompt, f"Image {gold}" if task == "irfl_1" else gold,
                                       fmt.n_images))  # fmt: skip
            if task == "nlvr2_0" and split == "train":
                for j, (prompt, gold) in enumerate(NLVR2_EXTRA, start=n):
                    samples.append(_sample(task, fmt, split, j, prompt, gold, 2))
            for s in samples:
                for p in [s["image"]] if isinstance(s["image"], str) else s["image"]:
                    seed += 1
                    _image(base / p, seed)
            path = base / "dataset" / fmt.dataset / split / f"dataset-{fmt.subset}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w") as f:
                json.dump(samples, f, indent=4)
    return base


def _files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*")} if out.exists() else set()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Every fixture task converted once (library call); shared by the round-trip tests."""
    tmp = tmp_path_factory.mktemp("convert")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_CACHE", str(tmp / "hf-cache"))
        base = write_release(tmp / "repo", list(FORMATS))
        out = tmp / "out"
        manifest = R.convert_release([TASKS[t] for t in FORMATS], base, out)
        yield tmp, base, out, manifest


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DRAKE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DRAKE_DEBUG", raising=False)
    return tmp_path


# ------------------------------------------------------------------------------------------------ round trip


def test_every_format_keeps_prompts_choices_and_answers_exactly(converted):
    _, _, out, manifest = converted
    assert all(manifest.status[t] == "built" for t in FORMATS)
    for task, fmt in FORMATS.items():
        for split, n in SIZES.items():
            rows = pq.read_table(out / task / f"{split}-00000-of-00001.parquet").to_pylist()
            kept = [r for r in rows if r["id"].rsplit("-", 1)[1] not in ("00003", "00004")]
            assert len(kept) == n, (task, split)
            for i, row in enumerate(kept):
                prompt, answer, choices = _expected(task, i)
                assert row["id"] == f"{fmt.dataset}-{fmt.subset}-{split}-{i:05d}"
                assert (row["task"], row["prompt"], row["answer"], row["choices"]) == (
                    task,
                    prompt,
                    answer,
                    choices,
                )
                assert len(row["images"]) == fmt.n_images == prompt.count(I)
                assert row["answer"] in (row["choices"] or [row["answer"]])
    # the open task keeps its trailing space and has no choices; the int gold became "0".."6"
    assert pq.read_table(out / "iconqa_2" / "test-00000-of-00001.parquet")["prompt"][0].as_py().endswith(" ")
    report = manifest.tasks["seedbench2_0"]["report"]["train"]
    assert report["choice_styles"] == {"letters": 3} and report["images_per_row"] == {1: 3}


def test_load_dataset_and_load_task_split_decode_multi_image_rows(converted):
    tmp, _, out, _ = converted
    ds = datasets.load_dataset(str(out), "fashion200k_0", split="train", cache_dir=str(tmp / "plain-cache"))
    assert len(ds) == 3 and ds[1]["answer"] == "1" and ds[1]["choices"] == DIGITS
    assert len(ds[0]["images"]) == 5 and all(isinstance(im, Image.Image) for im in ds[0]["images"])
    assert ds[0]["images"][0].size == (8, 8)
    open_rows = load_task_split(out, "iconqa_2", "test")
    assert [r["answer"] for r in open_rows] == ["3", "4"] and open_rows[0]["choices"] is None
    one = load_task_split(out, "coinstruct_0", "test")[0]  # `image` was a plain string
    assert len(one["images"]) == 1 and one["choices"] == ["A", "B", "C"]
    assert len(load_task_split(out, "imagecode_0", "test")[0]["images"]) == 4  # an unseen task


def test_placeholder_mismatch_is_dropped_or_repaired_and_counted(converted):
    _, _, out, manifest = converted
    entry = manifest.tasks["nlvr2_0"]
    counts = entry["report"]["train"]["counts"]
    assert counts == {"dropped_image_tag_mismatch": 1, "image_tags_prepended": 1}
    assert entry["report"]["train"]["rows_in"] == 5 and entry["files"]["train"]["rows"] == 4
    rows = pq.read_table(out / "nlvr2_0" / "train-00000-of-00001.parquet").to_pylist()
    assert [r["id"] for r in rows][-1] == "NLVR2-0-train-00004"  # index 3 (3 tags, 2 images) was dropped
    assert rows[-1]["prompt"] == I * 2 + "\n" + NLVR2_EXTRA[1][0] and rows[-1]["answer"] == "False"
    assert any("1 of 5 rows dropped" in w and "NLVR2/train/dataset-0.json[3]" in w for w in entry["warnings"])
    assert "fashion200k_0" in json.loads((out / "manifest.json").read_text())["tasks"]


def test_rerun_is_cached_and_a_changed_file_reconverts(converted):
    _, base, out, _ = converted
    tasks = [TASKS["iconqa_0"], TASKS["iconqa_2"]]
    assert set(R.convert_release(tasks, base, out).status.values()) == {"cached"}
    path = base / "dataset/iconqa/test/dataset-0.json"
    samples = json.loads(path.read_text())
    samples[0]["conversations"][1]["value"] = "7"
    path.write_text(json.dumps(samples, indent=4))
    status = R.convert_release(tasks, base, out).status
    assert status == {"iconqa_0": "built", "iconqa_2": "cached"}
    assert load_task_split(out, "iconqa_0", "test")[0]["answer"] == "7"
    assert R.ensure_converted(tasks, out) == out == B.ensure_built(tasks, out, source="drake")


# ------------------------------------------------------------------------------------------------ choices


@pytest.mark.parametrize(
    ("prompt", "answer", "items", "style", "notes"),
    [
        ("<image> Choice List:['True','False'] Answer:", "True", ["True", "False"], "Choice_List", {"unquoted"}),
        ("x\nChoice List: [a cat sitting, a dog, running, two birds]", "a dog, running",
         ["a cat sitting", "a dog, running", "two birds"], "Choice_List", {"anchored"}),
        ("x Choice list:[True, False].", "true ", ["True", "False"], "choice_list", {"respelled"}),
        ("x Choice list:[Yes, No, Yes].", "No", ["Yes", "No"], "choice_list", {"deduplicated"}),
        ("x\n[cat, dog]\ny", "dog", ["cat", "dog"], "bare_list", set()),
        ("x Choice list:[A: one| B: two]. Your answer is:", "B", ["A", "B"], "choice_list", set()),
        ("Q? Print only the answer with a single answer id", "4", ["1", "2", "3", "4", "5"], "answer_id", set()),
    ],
)  # fmt: skip
def test_parse_choices_styles(prompt, answer, items, style, notes):
    got = R.parse_choices(prompt, answer)
    assert (got.items, got.style, set(got.notes)) == (items, style, notes)
    assert got.answer in got.items


def test_unparseable_choices_name_the_file_and_row(env):
    base = write_release(env / "repo", ["iconqa_0"])
    path = base / "dataset/iconqa/train/dataset-0.json"
    samples = json.loads(path.read_text())
    samples[2]["conversations"][1]["value"] = "9"  # not among [5, 7, 6]
    path.write_text(json.dumps(samples, indent=4))
    with pytest.raises(DataError, match=r"dataset-0\.json\[2\]: task 'iconqa_0': cannot recover the choices"):
        R.convert_release([TASKS["iconqa_0"]], base, env / "out")
    assert not (env / "out").exists()


# ------------------------------------------------------------------------------------------------ failures


def test_missing_image_names_the_file_and_tar_and_writes_nothing(env):
    base = write_release(env / "repo", ["iconqa_0", "coinstruct_0"])
    gone = base / "dataset/Co-Instruct-DB/images/coinstruct_0_test_1_0.jpg"
    gone.unlink()
    with pytest.raises(DataError) as err:
        R.convert_release([TASKS["iconqa_0"], TASKS["coinstruct_0"]], base, env / "out")
    msg = str(err.value)
    assert str(gone) in msg and "Co-Instruct-DB/test/dataset-0.json[1]" in msg
    assert "huggingface-cli download SNUMPR/DRAKE Co-Instruct-DB.tar --repo-type dataset" in msg
    assert not (env / "out").exists()  # iconqa_0 was fine, but nothing is written before everything checks


def test_bad_json_names_the_file(env):
    base = write_release(env / "repo", ["magicbrush_0"])
    path = base / "dataset/MagicBrush/test/dataset-0.json"
    path.write_text(path.read_text()[:-10])
    with pytest.raises(
        DataError, match=rf"{path}: invalid JSON \(line \d+ column \d+.*re-extract MagicBrush\.tar"
    ):
        R.convert_release([TASKS["magicbrush_0"]], base, env / "out")
    path.write_text('{"not": "a list"}')
    with pytest.raises(DataError, match="expected a JSON list of samples"):
        R.convert_release([TASKS["magicbrush_0"]], base, env / "out")


def test_unknown_subset_dataset_and_absent_files(env):
    base = write_release(env / "repo", ["nlvr2_0"])
    with pytest.raises(
        DataError, match=r"unknown subset 1 of NLVR2 \(task 'nlvr2_1'\).*available subsets: 0"
    ):
        R.convert_release([TASKS["nlvr2_1"]], base, env / "out")
    with pytest.raises(DataError, match=r"CIRR not found \(task 'cirr_0'\); download it: huggingface-cli download "
                                        r"SNUMPR/DRAKE CIRR\.tar --repo-type dataset"):  # fmt: skip
        R.convert_release([TASKS["cirr_0"]], base, env / "out")
    with pytest.raises(
        DataError, match=r"unknown subset 1 of NLVR2 .*; 1 more tasks cannot be located either \(cirr_0\)"
    ):
        R.convert_release([TASKS["nlvr2_1"], TASKS["cirr_0"]], base, env / "out")
    (base / "dataset" / "CIRR.tar").write_bytes(b"")
    with pytest.raises(DataError, match=r"CIRR\.tar is not extracted .*tar -xf"):
        R.convert_release([TASKS["cirr_0"]], base, env / "out")
    (base / "dataset/NLVR2/test/dataset-0.json").unlink()
    with pytest.raises(DataError, match=r"test/dataset-0\.json not found .*holds no dataset-\*\.json"):
        R.convert_release([TASKS["nlvr2_0"]], base, env / "out")
    custom = env / "tasks.yaml"
    custom.write_text(
        "schema_version: 1\ntasks:\n  - {name: t, title: T, images: 2, answer: choice, metric: choice_accuracy,\n"
        "     sources: {synth: {family: pair_statement}, drake: {dataset: NLRV2, subset: 0}}}\n"
        "  - {name: u, title: U, images: 2, answer: choice, metric: choice_accuracy,\n"
        "     sources: {synth: {family: pair_statement}, drake: {dataset: nlvr2, subset: 0}}}\n"
    )
    custom_tasks = load_tasks(custom)
    with pytest.raises(DataError, match=r"unknown DRAKE dataset 'NLRV2' \(task 't'\) \(did you mean 'NLVR2'"):
        R.convert_release([custom_tasks["t"]], base, env / "out")
    with pytest.raises(DataError, match=r"but 'NLVR2' is \(folder names are case-sensitive\)"):
        R.convert_release([custom_tasks["u"]], base, env / "out")
    assert not (env / "out").exists()


def test_failure_while_writing_leaves_nothing_half_written(env):
    base = write_release(env / "repo", ["iconqa_0", "wcvqa_0"])
    (base / "dataset/WCVQA/images/wcvqa_0_train_1_0.jpg").write_bytes(b"not a jpeg")
    out = env / "out"
    before = None
    with pytest.raises(
        DataError, match=r"wcvqa_0_train_1_0\.jpg does not decode \(.*WCVQA/train/dataset-0\.json\[1\]"
    ):
        R.convert_release([TASKS["iconqa_0"], TASKS["wcvqa_0"]], base, out)
    before = _files(out)
    assert not any(".tmp-" in f or ".old-" in f for f in before)
    assert "wcvqa_0" not in before and "iconqa_0/train-00000-of-00001.parquet" in before  # per-config atomic
    assert set(json.loads((out / "manifest.json").read_text())["tasks"]) == {"iconqa_0"}
    assert len(load_task_split(out, "iconqa_0", "train")) == 3


def test_a_task_with_no_matchable_rows_fails_and_synth_dirs_are_refused(env):
    base = write_release(env / "repo", ["dreamsim_0"])
    path = base / "dataset/DreamSim/train/dataset-0.json"
    samples = json.loads(path.read_text())
    for s in samples:
        s["conversations"][0]["value"] += f" extra {I}"
    path.write_text(json.dumps(samples, indent=4))
    with pytest.raises(
        DataError, match=r"dataset-0\.json: task 'dreamsim_0' would be empty: none of its 3 samples"
    ):
        R.convert_release([TASKS["dreamsim_0"]], base, env / "out")
    synth = env / "synth"
    synth.mkdir()
    (synth / "manifest.json").write_text(json.dumps({"format_version": FORMAT_VERSION,
        "params": {"source": "synth"}, "tasks": {"x": {"files": {}}}}))  # fmt: skip
    with pytest.raises(DataError, match="holds a DRAKE-synth build"):
        R.convert_release([TASKS["dreamsim_0"]], base, synth)
    with pytest.raises(DataError, match="is not a converted DRAKE release"):
        B.ensure_built([TASKS["dreamsim_0"]], synth, source="drake")


# ------------------------------------------------------------------------------------------------ CLI


def _one_error_line(capsys, rc: int, *needles: str) -> str:
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_cli_errors_are_one_line_with_exit_code_2(env, capsys):
    out = str(env / "out")
    rc = main(["build", "--source", "drake", "--tasks", "iconqa_0", "--out", out, "--quiet"])
    _one_error_line(capsys, rc, "needs --from DIR",
                    "huggingface-cli download SNUMPR/DRAKE <Dataset>.tar --repo-type dataset")  # fmt: skip
    rc = main(["build", "--source", "drake", "--from", str(env / "nowhere"), "--out", out, "--quiet"])
    _one_error_line(capsys, rc, "no such directory")
    base = write_release(env / "repo", ["iconqa_0"])
    gone = base / "dataset/iconqa/images/iconqa_0_train_2_0.png"
    gone.unlink()
    rc = main(
        ["build", "--source", "drake", "--from", str(base), "--tasks", "iconqa_0", "--out", out, "--quiet"]
    )
    _one_error_line(capsys, rc, str(gone), "iconqa.tar")
    assert not Path(out).exists()


def test_cli_converts_and_warns(env, capsys):
    base = write_release(env / "repo", ["nlvr2_0", "bongard_hoi_1"])
    # the release's Bongard-HOI subset 1 may really be the 7-image query task (drake_format.md §6): warn
    path = base / "dataset/Bongard-HOI/train/dataset-1.json"
    samples = json.loads(path.read_text())
    for s in samples:
        s["image"].append(s["image"][0])
        s["conversations"][0]["value"] = I + s["conversations"][0]["value"]
    path.write_text(json.dumps(samples, indent=4))
    out = env / "out"
    argv = ["build", "--source", "drake", "--from", str(base / "dataset"), "--tasks", "nlvr2_0", "bongard_hoi_1",
            "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    stdout, stderr = capsys.readouterr()
    assert "nlvr2_0" in stdout and "NLVR2/0" in stdout and "2 converted" in stdout
    assert "warning: nlvr2_0 train: 1 of 5 rows dropped" in stderr
    assert "bongard_hoi_1: most rows have 7 images but tasks.yaml declares images: 6" in stderr
    assert main(argv) == 0 and "0 converted, 2 up to date" in capsys.readouterr().out
    assert main([*argv, "--force"]) == 0 and "2 converted" in capsys.readouterr().out
