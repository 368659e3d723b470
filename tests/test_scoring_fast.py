"""The fast scorers pick what the pair-by-pair scorer picks, on built rows, with and without adapters.

The reference is ``score_pairs`` over every (row, choice) pair, each encoded on its own (the scorer before
the fast paths). The shared-prompt path runs the prompt and its images once per row and must agree wherever
``shares_prompt`` allows it; models that pool over the whole sequence (PQ-LoRA's gate over all tokens) must
be detected and scored pairwise, with each row's images still encoded once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from baselines.feddpa import inference_mix, prefix_lookup
from drake.adapters.lora import LoraSettings, apply_lora
from drake.adapters.mix import MixModel
from drake.adapters.multi import add_lora_adapters, set_mix
from drake.data.build import ensure_built
from drake.method_registry import METHODS
from drake.models.batching import encode_prompts, expand_choices
from drake.models.loading import load_model
from drake.models.scoring import choice_scores, image_encoder, score_pairs, shares_prompt
from drake.runner import load_rows
from drake.spec import load_tasks
from fedmosaic.pqlora import PQLoraConfig, inject_pqlora

# images per row / choices per row: 5/7, 6/4, 1/5, 2/2, 3/3, 6/3 (recipeqa's choices are two tokens)
TASKS = ("fashion200k_0", "bongard_hoi_1", "wcvqa_0", "nlvr2_0", "coinstruct_3", "recipeqa_cloze")
TIE = 1e-4  # two choices closer than this may swap places from float rounding alone


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Three test rows of each task (mixed in one list, so batches mix lengths), plus one row whose choices
    differ in length, so a choice's position and length normalisation both matter."""
    tasks = load_tasks()
    specs = [tasks[t] for t in TASKS]
    data_dir = ensure_built(specs, tmp_path_factory.mktemp("built"), scale=0.05, extras=False, progress=False)
    data = load_rows(Path(data_dir), specs)
    out = [r for i in range(3) for t in TASKS for r in data[t].splits["test"][i : i + 1]]
    ragged = dict(out[2], choices=["red", "a big red cube", "two", "the blue one on the left"])
    return [*out, ragged]


@pytest.fixture(scope="module")
def pretrained(untrained_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-llama-s after a short pre-training (peaked, non-random predictions), saved as a model folder."""
    from drake.models.pretrain import deterministic, draw_rows, train
    from drake.models.zoo import get_spec

    spec = get_spec("tiny-llama-s").with_overrides(steps=25, batch_size=16, lr=3e-3)
    loaded = load_model(untrained_models["tiny-llama-s"], device="cpu")
    model = loaded.model
    for p in model.parameters():
        p.requires_grad_(True)
    with deterministic(threads=1):
        train(model, loaded.processor, draw_rows("train", 400, 0, 32), spec, progress=False)
    path = tmp_path_factory.mktemp("pretrained") / "tiny-llama-s"
    model.save_pretrained(path)
    loaded.processor.save_pretrained(path)
    return path


def _picks(scores: list[list[float]]) -> list[int]:
    return [max(range(len(s)), key=s.__getitem__) for s in scores]


def reference(
    loaded, model, rows: list[dict], *, length_norm: bool, batch_size: int = 7
) -> list[list[float]]:
    """The scorer before the fast paths: every (row, choice) pair encoded and run on its own."""
    out: list[list[float]] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        flat_rows, flat_choices, owner = expand_choices(chunk)
        flat = score_pairs(loaded, flat_rows, flat_choices, model=model, length_norm=length_norm)
        out += [[s for i, s in zip(owner, flat) if i == r] for r in range(len(chunk))]
    return out


def assert_same_picks(
    loaded, model, rows: list[dict], *, length_norm: bool, share_prompt: bool | None = None
) -> None:
    """Scores agree to float rounding and the picks are identical except on near ties."""
    model.eval()
    old = reference(loaded, model, rows, length_norm=length_norm)
    new = choice_scores(
        loaded, rows, model=model, batch_size=7, length_norm=length_norm, share_prompt=share_prompt
    )
    assert [len(s) for s in new] == [len(r["choices"]) for r in rows]
    decided = 0
    for a, b in zip(old, new):
        assert b == pytest.approx(a, abs=1e-4)
        gap = sorted(a)[-1] - sorted(a)[-2]
        if gap > TIE:
            decided += 1
            assert _picks([a]) == _picks([b])
    assert decided >= 0.8 * len(rows), "too many ties: the comparison would prove little"


def _randomize(model: torch.nn.Module, marker: str, scale: float = 0.2) -> None:
    """Non-zero adapter weights (a fresh LoRA's B is zero, so it would not change a single logit)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if marker in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


@pytest.mark.parametrize("length_norm", [True, False])
@pytest.mark.parametrize("name", ["tiny-llama-s", "tiny-qwen-s", "pretrained"])
def test_shared_prompt_matches_pairs(rows, untrained_models, pretrained, name, length_norm) -> None:
    loaded = load_model(pretrained if name == "pretrained" else untrained_models[name], device="cpu")
    assert shares_prompt(loaded.model)
    assert_same_picks(loaded, loaded.model, rows, length_norm=length_norm)
    assert image_encoder(loaded.model) is not None
    assert_same_picks(loaded, loaded.model, rows, length_norm=length_norm, share_prompt=False)  # pairwise


@pytest.mark.parametrize("share_prompt", [True, False])
def test_token_budget_only_splits_forwards(rows, untrained_models, share_prompt) -> None:
    """One forward per item (budget 1), per budget (auto) or per chunk (None): the same scores."""
    loaded = load_model(untrained_models["tiny-llama-s"], device="cpu")
    runs = [
        choice_scores(loaded, rows, batch_size=9, share_prompt=share_prompt, max_tokens=budget)
        for budget in (1, "auto", None)
    ]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert b == pytest.approx(a, abs=1e-5)


def test_pretrained_model_is_not_a_coin_flip(rows, pretrained) -> None:
    """The pre-trained model is the meaningful case: it must have learned something the scorer sees."""
    loaded = load_model(pretrained, device="cpu")
    scores = choice_scores(loaded, rows)
    spread = [max(s) - min(s) for s in scores]
    assert sum(spread) / len(spread) > 0.05


@pytest.mark.parametrize("length_norm", [True, False])
def test_peft_lora_and_adapter_mixes_share_the_prompt(rows, pretrained, length_norm) -> None:
    loaded = load_model(pretrained, device="cpu")
    peft_model, _ = apply_lora(loaded.model, LoraSettings(r=4, alpha=8))
    _randomize(peft_model, "lora_B")
    assert shares_prompt(peft_model)
    assert_same_picks(loaded, peft_model, rows, length_norm=length_norm)
    add_lora_adapters(peft_model, ["local"])
    _randomize(peft_model, "lora_")
    set_mix(peft_model, {"default": 0.7, "local": 0.4})  # Ditto/APFL-style weighted mix of two adapters
    assert shares_prompt(peft_model)
    assert_same_picks(loaded, peft_model, rows, length_norm=length_norm)


def test_eager_attention_gets_an_additive_mask(rows, untrained_models) -> None:
    loaded = load_model(untrained_models["tiny-llama-m"], device="cpu")
    loaded.model.set_attn_implementation("eager")
    assert shares_prompt(loaded.model)
    assert_same_picks(loaded, loaded.model, rows, length_norm=True)


def test_pqlora_gate_over_all_tokens_is_scored_pairwise(rows, pretrained) -> None:
    """The official gate averages each layer input over *all* tokens, the choice's included: the prompt's
    states depend on the choice, so sharing the prompt would change the numbers (checked) and is refused."""
    loaded = load_model(pretrained, device="cpu")
    pq = inject_pqlora(loaded.model, PQLoraConfig(r=4, lora_alpha=8, gate="sample", gate_tokens="all"))
    _randomize(pq, "pqlora_", scale=0.3)
    pq.eval()
    assert not shares_prompt(pq) and image_encoder(pq) is not None
    assert_same_picks(loaded, pq, rows, length_norm=True)
    pairs = reference(loaded, pq, rows, length_norm=True)
    forced = choice_scores(loaded, rows, model=pq, batch_size=7, share_prompt=True)
    assert max(abs(x - y) for a, b in zip(pairs, forced) for x, y in zip(a, b)) > 1e-3


@pytest.mark.parametrize("length_norm", [True, False])
def test_pqlora_gate_over_the_prompt_shares_the_prompt(rows, pretrained, length_norm) -> None:
    """The default gate averages the prompt only and is told where it is: one forward per row, same picks."""
    loaded = load_model(pretrained, device="cpu")
    pq = inject_pqlora(loaded.model, PQLoraConfig(r=4, lora_alpha=8, gate="sample"))
    _randomize(pq, "pqlora_", scale=0.3)
    pq.eval()
    assert shares_prompt(pq)
    assert_same_picks(loaded, pq, rows, length_norm=length_norm)  # shared prompt vs the pair reference
    assert_same_picks(loaded, pq, rows, length_norm=length_norm, share_prompt=False)
    gate_all = inject_pqlora(load_model(pretrained, device="cpu").model,
                             PQLoraConfig(r=4, lora_alpha=8, gate="sample", gate_tokens="all"))  # fmt: skip
    gate_all.load_state_dict(pq.state_dict())
    gate_all.eval()
    a, b = reference(loaded, pq, rows, length_norm=length_norm), reference(loaded, gate_all, rows, length_norm=length_norm)
    assert max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)) > 1e-3  # the gate's tokens matter


def test_mix_wrapper_shares_the_prompt(rows, pretrained) -> None:
    """A method's mix wrapper scores one prompt for all its choices, exactly: FedSim's two-pass logit sum
    (each pass causal) and FedDPA's per-row mix, which reads each row's prompt through ``prompt_tokens``."""
    loaded = load_model(pretrained, device="cpu")
    peft_model, _ = apply_lora(loaded.model, LoraSettings(r=4, alpha=8))
    add_lora_adapters(peft_model, ["local"])
    _randomize(peft_model, "lora_")
    wrapper = MixModel(peft_model)
    assert shares_prompt(wrapper) and image_encoder(wrapper) is not None
    wrapper.branches = [{"default": 1.0}, {"local": 1.0}]
    assert_same_picks(loaded, wrapper, rows, length_norm=False)
    wrapper.branches = None
    ids, _ = encode_prompts(rows, loaded.processor)
    gen = torch.Generator().manual_seed(1)
    table = {tuple(x): float(w) for x, w in zip(ids, torch.rand(len(ids), generator=gen))}  # one lambda a row
    seen: list[int] = []

    def row_mix(input_ids: torch.Tensor, mask: torch.Tensor):
        lam = prefix_lookup(table, input_ids, mask, default=-1.0)
        seen.extend(int(x) for x in (lam == -1.0).nonzero())
        return inference_mix(lam)

    wrapper.row_mix = row_mix
    assert_same_picks(loaded, wrapper, rows, length_norm=True)
    assert not seen, "a scored sequence found no prompt in the table"
    pairs = reference(loaded, wrapper, rows, length_norm=True)
    table.update({k: 1.0 - v for k, v in table.items()})
    assert max(abs(x - y) for a, b in zip(pairs, reference(loaded, wrapper, rows, length_norm=True))
               for x, y in zip(a, b)) > 1e-3  # fmt: skip  # the per-row weights matter
    # FedSim's default (the paper's one network, both adapters in every layer) is the peft model itself
    assert shares_prompt(METHODS.get("fedsim")().wrap(peft_model))


@pytest.mark.parametrize("length_norm", [True, False])
def test_pqlora_scalar_gate_may_declare_itself_causal(rows, pretrained, length_norm) -> None:
    """A module from outside torch/transformers/peft is trusted only when it says so (``prefix_causal``)."""
    loaded = load_model(pretrained, device="cpu")
    pq = inject_pqlora(loaded.model, PQLoraConfig(r=4, lora_alpha=8, gate="scalar", gate_tokens="all"))
    _randomize(pq, "pqlora_", scale=0.3)
    assert shares_prompt(pq)  # one learnable beta per layer: it declares that nothing depends on later tokens
    pq.prefix_causal = None
    assert not shares_prompt(pq)  # unknown modules: scored as pairs until declared
    pq.prefix_causal = True
    assert_same_picks(loaded, pq, rows, length_norm=length_norm)
    pq.layers[next(iter(pq.layers))].prefix_causal = False  # a False anywhere inside wins
    assert not shares_prompt(pq)


def test_images_at_the_target_size_skip_only_no_op_processing(rows, untrained_models, monkeypatch) -> None:
    """Collate skips resize/RGB conversion of images already at the processor's size: same tensors."""
    from drake.models import batching

    processor = load_model(untrained_models["tiny-llama-s"], device="cpu").processor
    batching.collate(processor, rows[:3])
    assert batching._NO_OP_CHECKED.get(processor) is True  # checked once against the full path
    fast = batching.collate(processor, rows[:6])
    monkeypatch.setitem(batching._NO_OP_CHECKED, processor, False)  # force the processor's full path
    slow = batching.collate(processor, rows[:6])
    assert fast.keys() == slow.keys() and all(torch.equal(fast[k], slow[k]) for k in slow)
    assert not batching._already_fit(processor, [im.resize((40, 40)) for im in rows[0]["images"]])
    assert not batching._already_fit(processor, [im.convert("L") for im in rows[0]["images"]])


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_scores_on_the_fast_path(method) -> None:
    """Every registered method's default model shares each prompt across its choices and reuses the row's
    image features (exact, by the tests above). A wrapper that hid this (FedSim's, FedDPA's, once) left every
    number unchanged but made evaluation several times slower."""
    loaded = load_model("tiny-llama-s", device="cpu", progress=False)
    model, _ = METHODS.get(method)().attach(loaded.model, "tiny-llama-s")
    assert shares_prompt(model) and image_encoder(model) is not None
