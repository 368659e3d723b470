"""The tiny model zoo: configs, tokenizer, batching, scoring, save/load, loader errors, LoRA targets, pretrain."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from drake.data.synth.public import QTYPES, SCHEDULE, public_context, public_sample
from drake.errors import DataError, DrakeError, UnknownNameError
from drake.models.batching import IGNORE_INDEX, collate
from drake.models.folders import PRETRAIN_VERSION, read_meta
from drake.models.loading import language_model_target_regex, load_model
from drake.models.pretrain import (
    PreEncoded,
    batch_order,
    deterministic,
    eval_rows,
    pretrain,
    pretrain_many,
    train,
)
from drake.models.scoring import choice_scores, generate_answers, score_choices
from drake.models.tokenizer import IMAGE, SPECIALS, UNK, default_vocab, detokenize, make_tokenizer, words_of
from drake.models.zoo import ZOO, ModelSpec, build_model, count_parameters, get_spec


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer(default_vocab())


@pytest.fixture(scope="module")
def members(tokenizer):
    return {name: build_model(name, tokenizer, seed=0) for name in sorted(ZOO)}


def _rows(n: int, split: str = "train", start: int = 0) -> list[dict]:
    out = []
    for i in range(start, start + n):
        s = public_sample(public_context(split, i))
        out.append({"images": s.images, "prompt": s.prompt, "choices": s.choices, "answer": s.answer})
    return out


def _multi_image_rows() -> list[dict]:
    rows = _rows(24)
    two = next(r for r in rows if len(r["images"]) == 2 and r["choices"])
    one = next(r for r in rows if len(r["images"]) == 1 and r["choices"])
    return [two, one]


# ------------------------------------------------------------------------------------------- zoo shapes


def test_every_member_is_small_and_families_differ_in_width_and_depth(members):
    sizes = {}
    for name, (model, processor) in members.items():
        total = count_parameters(model)["total"]
        assert total <= 2_500_000, f"{name} has {total} parameters"
        text = model.config.text_config
        sizes[name] = (text.hidden_size, text.num_hidden_layers, total)
        assert processor.tokenizer.image_token == IMAGE
    for family in ("llama", "qwen"):
        s, m = sizes[f"tiny-{family}-s"], sizes[f"tiny-{family}-m"]
        assert s[0] < m[0] and s[1] < m[1] and s[2] < m[2], (s, m)
    assert members["tiny-llama-s"][0].config.text_config.model_type == "llama"
    assert members["tiny-qwen-s"][0].config.text_config.model_type == "qwen2"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_multi_image_forward_backward(members, name):
    model, processor = members[name]
    rows = _multi_image_rows()
    batch = collate(processor, rows)
    spec = get_spec(name)
    n_img = (batch["input_ids"] == processor.tokenizer.image_token_id).sum(-1).tolist()
    assert n_img == [2 * spec.image_tokens, spec.image_tokens]
    assert batch["pixel_values"].shape == (3, 3, spec.image_size, spec.image_size)
    model.train()
    out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    vision_grad = sum(
        p.grad.abs().sum() for n, p in model.named_parameters() if "vision_tower" in n and p.grad is not None
    )
    assert vision_grad > 0, "the loss must reach the vision tower through the image tokens"
    model.zero_grad(set_to_none=True)
    model.eval()


def test_unknown_override_is_a_spec_error():
    with pytest.raises(DrakeError, match="text_hiden.*did you mean 'text_hidden'"):
        get_spec("tiny-llama-s").with_overrides(text_hiden=64)


def test_members_share_one_tower_donor_and_must_match_its_vision_settings():
    towers = {ZOO[name].tower for name in ZOO}
    assert len(towers) == 1 and None not in towers
    spec = get_spec("tiny-qwen-m").with_overrides(**{"tower.steps": 7})
    assert spec.tower.recipe.steps == 7 and spec.recipe.steps == get_spec("tiny-qwen-m").recipe.steps
    with pytest.raises(DrakeError, match="differ from those of its tower donor.*tower=None"):
        get_spec("tiny-llama-s").with_overrides(vision_hidden=64)
    assert get_spec("tiny-llama-s").with_overrides(vision_hidden=64, tower=None).tower is None
    with pytest.raises(DrakeError, match="no tower donor"):
        get_spec("tiny-llama-s").with_overrides(tower=None, **{"tower.steps": 3})


# ------------------------------------------------------------------------------------------- tokenizer


def test_vocabulary_covers_every_task_text(tokenizer):
    """No <unk> in any task's prompts, choices or answers (test split: never seen while building the vocab)."""
    import drake.data.synth.families  # noqa: F401
    from drake.data.synth.base import FAMILIES, SampleContext
    from drake.spec import load_tasks

    vocab = tokenizer.get_vocab()
    missing: dict[str, set[str]] = {}
    for spec in load_tasks().values():
        synth = spec.sources["synth"]
        family = FAMILIES.get(synth.family)
        for i in range(25):
            s = family(SampleContext(spec.name, "test", i, 0, 32, spec.images), **dict(synth.params))
            for text in (s.prompt, s.answer, *(s.choices or ())):
                bad = {w for w in words_of(text) if w not in vocab}
                if bad:
                    missing.setdefault(spec.name, set()).update(bad)
    assert not missing, f"words missing from the vocabulary: {missing}"


def test_tokenizer_is_deterministic_cased_and_splits_punctuation(tokenizer):
    words = default_vocab()
    assert words == sorted(words) and not set(words) & set(SPECIALS)
    assert tokenizer.convert_ids_to_tokens(list(range(len(SPECIALS)))) == list(SPECIALS)
    assert make_tokenizer(reversed(words)).get_vocab() == tokenizer.get_vocab()
    ids = tokenizer("Image A: <image><image> Choice list:[True, False].", add_special_tokens=False)[
        "input_ids"
    ]
    toks = tokenizer.convert_ids_to_tokens(ids)
    assert toks == [
        "Image",
        "A",
        ":",
        IMAGE,
        IMAGE,
        "Choice",
        "list",
        ":",
        "[",
        "True",
        ",",
        "False",
        "]",
        ".",
    ]
    assert tokenizer.convert_tokens_to_ids("A") != tokenizer.convert_tokens_to_ids("a")
    assert UNK in tokenizer.convert_ids_to_tokens(tokenizer("qwertyuiop")["input_ids"])
    assert detokenize("Image A , 3 - 4 . sit _ on") == "Image A, 3-4. sit_on"


# ---------------------------------------------------------------------------------------------- batching


def test_collate_labels_only_the_answer(members):
    _, processor = members["tiny-llama-s"]
    rows = _rows(6)
    batch = collate(processor, rows)
    tok = processor.tokenizer
    for i, row in enumerate(rows):
        labelled = batch["labels"][i][batch["labels"][i] != IGNORE_INDEX].tolist()
        assert labelled[-1] == tok.eos_token_id
        assert tok.decode(labelled[:-1]).split() == words_of(row["answer"])
        n_real = int(batch["attention_mask"][i].sum())
        assert (batch["attention_mask"][i][:n_real] == 1).all()  # right padding for training
    fast = PreEncoded(processor, rows).batch(range(len(rows)))  # the pre-training path: same tensors
    assert fast.keys() == batch.keys() and all(torch.equal(fast[k], batch[k]) for k in batch)
    left = collate(processor, rows, with_answer=False, padding_side="left")
    assert "labels" not in left
    assert (left["attention_mask"][:, -1] == 1).all()


def test_collate_rejects_placeholder_mismatch(members):
    _, processor = members["tiny-llama-s"]
    row = dict(_rows(1)[0])
    row["images"] = row["images"] * 2
    with pytest.raises(ValueError, match="image placeholders"):
        collate(processor, [row])


# ----------------------------------------------------------------------------------------------- scoring


def test_batched_scoring_matches_one_by_one(members):
    model, processor = members["tiny-qwen-s"]
    rows = [r for r in _rows(30) if r["choices"]][:6]
    batched = choice_scores(processor, rows, model=model, batch_size=6)
    single = [choice_scores(processor, [r], model=model)[0] for r in rows]
    for b, s in zip(batched, single):
        assert b == pytest.approx(s, abs=1e-4)
    picks = score_choices(processor, rows, model=model, length_norm=False)
    assert all(0 <= k < len(r["choices"]) for k, r in zip(picks, rows))
    assert len(generate_answers(processor, rows[:3], model=model, max_new_tokens=3)) == 3


# ----------------------------------------------------------------------------------- save / load / errors


@pytest.fixture(scope="module")
def saved_folder(members, tmp_path_factory):
    model, processor = members["tiny-llama-s"]
    path = tmp_path_factory.mktemp("saved") / "tiny-llama-s-test"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_save_load_safetensors_identical_outputs(members, saved_folder):
    files = {p.name for p in saved_folder.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    model, processor = members["tiny-llama-s"]
    loaded = load_model(saved_folder, device="cpu")
    spec = get_spec("tiny-llama-s")
    assert (loaded.family, loaded.num_layers, loaded.hidden_size) == (
        "llama",
        spec.text_layers,
        spec.text_hidden,
    )
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    assert not loaded.model.training and not any(p.requires_grad for p in loaded.model.parameters())
    rows = _multi_image_rows()
    model.eval()
    with torch.no_grad():
        a = model(**collate(processor, rows)).logits
        b = loaded.model(**collate(loaded, rows)).logits
    assert torch.equal(a, b)
    for x, y in zip(choice_scores(loaded, rows), choice_scores(processor, rows, model=model)):
        assert x == pytest.approx(y, abs=1e-5)


def test_lora_targets_only_text_projections(saved_folder):
    from peft import LoraConfig, get_peft_model

    loaded = load_model(saved_folder, device="cpu")
    regex = language_model_target_regex(("q_proj", "v_proj", "o_proj"))
    peft_model = get_peft_model(loaded.model, LoraConfig(r=4, target_modules=regex))
    adapted = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A")]
    assert len(adapted) == 3 * loaded.num_layers
    assert all(
        "language_model" in n and n.rsplit(".", 1)[-1] in ("q_proj", "v_proj", "o_proj") for n in adapted
    )
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "vision_tower" not in n for n in trainable)
    # evaluation (inference mode) then a training step on the same model
    rows = _multi_image_rows()
    choice_scores(loaded, rows, model=peft_model)
    peft_model.train()
    peft_model(**collate(loaded, rows)).loss.backward()
    assert all(p.grad is not None for n, p in peft_model.named_parameters() if p.requires_grad)


def test_loader_errors(tmp_path, monkeypatch, saved_folder):
    with pytest.raises(UnknownNameError, match="did you mean 'tiny-llama-s'"):
        load_model("tiny-lama-s")
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text((saved_folder / "config.json").read_text())
    with pytest.raises(DataError, match="no weights"):
        load_model(empty)
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(DataError, match="no config.json"):
        load_model(bare)
    other = tmp_path / "not-llava"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (other / "model.safetensors").write_bytes(b"")
    with pytest.raises(DrakeError, match="not a LLaVA-style model"):
        load_model(other)
    # a registered member that does not ship and was never pre-trained: an error, never a silent pre-train
    monkeypatch.setenv("DRAKE_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(ZOO, "tiny-qwen-xl", replace(get_spec("tiny-qwen-s"), name="tiny-qwen-xl", text_hidden=192))
    with pytest.raises(DataError, match="does not ship with DRAKE.*drake pretrain --model tiny-qwen-xl"):
        load_model("tiny-qwen-xl")


def test_hub_id_loads_offline_from_the_cache(members, tmp_path, monkeypatch):
    """The hub branch (an "org/name" id) on a tiny model placed in an HF cache layout, with a chat template."""
    model, processor = members["tiny-qwen-s"]
    snap = tmp_path / "hub" / "models--drake-test--tiny-llava" / "snapshots" / ("0" * 40)
    model.save_pretrained(snap)
    processor.tokenizer.chat_template = "{% for m in messages %}Q : {{ m['content'] }} {% endfor %}A :"
    try:
        processor.save_pretrained(snap)
    finally:
        processor.tokenizer.chat_template = None
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_model("drake-test/tiny-llava", device="cpu", cache_dir=tmp_path / "hub")
    assert loaded.name == "drake-test/tiny-llava" and loaded.family == "qwen2"
    from drake.models.prompting import format_prompt

    assert format_prompt(loaded.processor, "<image>\nWhat?") == "Q : <image>\nWhat? A :"
    rows = _multi_image_rows()
    assert len(choice_scores(loaded, rows)[0]) == len(rows[0]["choices"])
    with pytest.raises(DrakeError, match="cannot load model 'drake-test/missing'"):
        load_model("drake-test/missing", cache_dir=tmp_path / "hub")


# ------------------------------------------------------------------------------------------- pre-training


def test_public_split_is_balanced_and_separate_from_tasks():
    kinds = [public_sample(public_context("train", i)).meta["qtype"] for i in range(10 * len(SCHEDULE))]
    assert {k: kinds.count(k) for k in QTYPES} == {k: 10 for k in QTYPES}
    assert kinds.count("caption") == 30
    rows = eval_rows(18, 0, 32)
    assert sorted(public_sample(public_context("test", 0)).prompt) and all(r["choices"] for r in rows)
    assert {r["qtype"] for r in rows} == set(QTYPES)


def test_word_rows_make_every_vocabulary_word_a_target(tokenizer):
    from drake.models.pretrain import word_rows

    words = ["True", "False", "two", "apple"]
    rows = word_rows(words, 2, seed=0, image_size=32)
    assert sorted(r["answer"] for r in rows) == sorted(words * 2)
    assert all(r["prompt"].endswith(r["answer"]) and len(r["images"]) == 1 for r in rows)
    ids = tokenizer(rows[0]["prompt"])["input_ids"]
    assert tokenizer.unk_token_id not in ids, "the copy template's words are in the vocabulary"


def test_short_pretrain_reduces_loss_and_is_deterministic(tokenizer):
    spec = get_spec("tiny-llama-s").with_overrides(steps=30, batch_size=16, n_train=480, lr=3e-3)
    rows = [dict(r, qtype="") for r in _rows(480)]
    losses = []
    with deterministic(threads=1):  # one thread: robust to a busy machine, and the recipe's kernels
        for _ in range(2):
            model, processor = build_model(spec, tokenizer, seed=0)
            losses.append(train(model, processor, rows, spec, progress=False))
    assert losses[0] == losses[1], "same seed, same data order -> same losses"
    assert sum(losses[0][-5:]) / 5 < sum(losses[0][:5]) / 5 - 0.3
    order = batch_order(rows, 16, 40, seed=0)
    assert len(order) == 40 and all(len({len(rows[i]["images"]) for i in b}) == 1 for b in order)


def _small(name: str) -> ModelSpec:
    """A zoo member with a few-step recipe, for it and for its tower donor."""
    small = dict(steps=3, batch_size=8, n_train=64, n_eval=18, words_per_vocab_word=0)
    return get_spec(name).with_overrides(**small, **{f"tower.{k}": v for k, v in small.items()})


def test_pretrain_caches_a_loadable_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DRAKE_HOME", str(tmp_path))
    spec = _small("tiny-qwen-s")
    path = pretrain(spec, progress=False, log=lambda m: None)
    assert path.parent == tmp_path / "models" and path.name.startswith("tiny-qwen-s-")
    meta = read_meta(path)
    assert meta["versions"]["pretrain"] == PRETRAIN_VERSION and "overall" in meta["heldout_accuracy"]
    assert meta["tower"].startswith("tiny-siglip-captioner-") and (path.parent / meta["tower"]).is_dir()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert pretrain(spec, progress=False) == path  # cached: not trained again
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in Path(tmp_path / "models").iterdir() if p.name.startswith(".")]  # no temp dirs left
    loaded = load_model(path, device="cpu")
    assert loaded.meta["name"] == "tiny-qwen-s" and loaded.num_layers == spec.text_layers


def test_pretrain_many_side_by_side_gives_the_weights_of_one_by_one(tmp_path, monkeypatch):
    """Two lanes (spawned processes, one thread each) write the same bytes as training one member at a time;
    the shared tower is trained once, and every member carries it unchanged (frozen)."""
    from safetensors.torch import load_file

    specs = [_small(n) for n in ("tiny-llama-s", "tiny-qwen-s")]
    weights = {}
    for jobs in (1, 2):
        monkeypatch.setenv("DRAKE_HOME", str(tmp_path / f"jobs{jobs}"))
        paths = pretrain_many(specs, jobs=jobs, progress=False, log=lambda m: None)
        assert sorted(paths) == ["tiny-llama-s", "tiny-qwen-s"]
        weights[jobs] = {n: (p / "model.safetensors").read_bytes() for n, p in paths.items()}
        assert all(read_meta(p)["threads"] == 1 for p in paths.values())
        towers = [p for p in (tmp_path / f"jobs{jobs}" / "models").iterdir() if p.name.startswith("tiny-siglip")]
        assert len(towers) == 1
        donor = load_file(towers[0] / "model.safetensors")
        for p in paths.values():
            member = load_file(p / "model.safetensors")
            tower_keys = [k for k in member if "vision_tower." in k]
            assert tower_keys and all(torch.equal(member[k], donor[k]) for k in tower_keys)
    assert weights[1] == weights[2]


@pytest.mark.slow
def test_full_pretrain_reaches_the_accuracy_targets():
    """`drake pretrain --model all` targets: every member >= 0.55 held-out, M >= S within each family."""
    acc = {
        name: read_meta(pretrain(name, progress=False))["heldout_accuracy"]["overall"] for name in sorted(ZOO)
    }
    assert all(a >= 0.55 for a in acc.values()), acc
    assert acc["tiny-llama-m"] >= acc["tiny-llama-s"] and acc["tiny-qwen-m"] >= acc["tiny-qwen-s"], acc
