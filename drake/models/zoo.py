"""The tiny model zoo: LLaVA-style members built from configs (vision tower + projector + text model).

Two text families of different shapes (Llama, Qwen2), each with an S and an M member that differ in width
AND depth (PQ-LoRA matches blocks by relative depth). Every member stays under ~2.5M parameters so it
pre-trains on 2 CPU cores in minutes; users with a GPU register larger specs with ``register_model``
(or ``drake pretrain --set text_hidden=512 ...``). Each spec carries its own pre-training recipe,
budgeted in steps (not wall time), so a larger member is never starved. All four load one vision tower,
pre-trained once and frozen (``SIGLIP_TOWER``), as the members of a real LLaVA family share one CLIP.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from drake.errors import SpecError, UnknownNameError, did_you_mean

IMAGE_SIZE = 32
PATCH_SIZE = 8


#: numeric spec and recipe fields for which 0 is a valid setting (every other one must be positive)
_MAY_BE_ZERO = frozenset({"weight_decay", "seed", "vision_ffn", "warmup", "grad_clip", "words_per_vocab_word"})


@dataclass(frozen=True)
class Recipe:
    """How a member is pre-trained on the public split (all in steps; deterministic given ``seed``)."""

    steps: int = 900
    batch_size: int = 64
    lr: float = 2e-3
    warmup: float = 0.05  # fraction of steps
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    n_train: int = 16_000  # public train samples drawn once, then cycled in a seeded order
    words_per_vocab_word: int = 4  # copy rows per vocabulary word (public.word_sample), on top of n_train
    n_eval: int = 900  # held-out public test items (multiple choice only are scored)
    seed: int = 0


@dataclass(frozen=True)
class ModelSpec:
    """A zoo member: the vision tower, projector and text model shapes, plus its pre-training recipe."""

    name: str
    family: str  # text model: "llama" | "qwen2"
    vision: str  # vision tower: "clip" | "siglip"
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_ffn: int
    image_size: int = IMAGE_SIZE
    patch_size: int = PATCH_SIZE
    vision_ffn: int = 0  # 0: 4 x vision_hidden
    recipe: Recipe = field(default_factory=Recipe)
    #: the member whose pre-trained vision tower this one loads and freezes (None: train its own)
    tower: ModelSpec | None = None

    @property
    def image_tokens(self) -> int:
        """Tokens per image after the projector (CLIP's CLS is dropped by the 'default' strategy)."""
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def vision_dict(self) -> dict[str, Any]:
        """The fields that shape the vision tower: a member and its tower donor must agree on all of them."""
        keys = ("vision", "vision_hidden", "vision_layers", "vision_heads", "image_size", "patch_size", "vision_ffn")
        return {k: getattr(self, k) for k in keys}

    def with_overrides(self, **overrides: Any) -> ModelSpec:
        """A copy with spec or recipe fields replaced (``steps=...`` goes to the recipe, ``tower.steps=...``
        to the tower donor's, ``tower=None`` trains the member's own tower); values from the command line are
        converted to the fields' types and checked."""
        from drake.config import coerce_fields

        where = f"model {self.name!r}"
        recipe_keys = set(Recipe.__dataclass_fields__)
        spec_keys = set(ModelSpec.__dataclass_fields__) - {"recipe", "name"}
        tower = overrides.get("tower", self.tower)
        if isinstance(tower, str) and tower.lower() in ("none", "null"):
            tower = None  # from the command line: --set tower=none
        if tower is not None and not isinstance(tower, ModelSpec):
            raise SpecError(f"{where}: tower={tower!r}: expected none (train the member's own tower); change the "
                            "donor's settings with tower.KEY=VALUE")  # fmt: skip
        donor = {k.removeprefix("tower."): v for k, v in overrides.items() if k.startswith("tower.")}
        if donor:
            if tower is None:
                raise SpecError(f"{where} has no tower donor: drop the 'tower.' settings")
            tower = tower.with_overrides(**donor)
        rest = {k: v for k, v in overrides.items() if k != "tower" and not k.startswith("tower.")}
        for k in rest:
            if k not in spec_keys | recipe_keys:
                raise SpecError(f"{where}: unknown setting {k!r}{did_you_mean(k, sorted(spec_keys | recipe_keys))}")
        rec = coerce_fields(Recipe, {k: v for k, v in rest.items() if k in recipe_keys}, where=where)
        top = coerce_fields(ModelSpec, {k: v for k, v in rest.items() if k not in recipe_keys}, where=where)
        for k, v in {**rec, **top}.items():
            zero_ok = k in _MAY_BE_ZERO
            if isinstance(v, (int, float)) and not isinstance(v, bool) and (v < 0 if zero_ok else v <= 0):
                raise SpecError(f"{where}: {k}={v}: expected {'0 or more' if zero_ok else 'a positive number'}")
        return replace(self, recipe=replace(self.recipe, **rec), tower=tower, **top).checked()

    def checked(self) -> ModelSpec:
        if self.family not in ("llama", "qwen2") or self.vision not in ("clip", "siglip"):
            raise SpecError(f"model {self.name!r}: family must be llama|qwen2 and vision clip|siglip")
        if self.tower is not None and self.tower.vision_dict() != self.vision_dict():
            raise SpecError(
                f"model {self.name!r}: its vision settings {self.vision_dict()} differ from those of its tower "
                f"donor {self.tower.name!r} {self.tower.vision_dict()}; change both, or set tower=None"
            )
        return self


ZOO: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a member (e.g. a larger one for GPU users); names are unique."""
    if spec.name in ZOO:
        raise SpecError(f"model {spec.name!r} is already in the zoo; pick another name")
    ZOO[spec.name] = spec.checked()
    return spec


_TOWER = dict(vision="siglip", vision_hidden=96, vision_layers=2, vision_heads=4)
#: The family's shared vision tower, as in real LLaVA families (every LLaVA-1.5 size loads the same CLIP
#: and keeps it frozen): pre-trained once with a Qwen2 decoder the size of tiny-qwen-s on the whole public
#: split (captions and questions, the CapPa idea: captioning trains vision encoders), then loaded and frozen
#: by every member. Measured (450 steps, 1 thread, seed 0): tiny-llama-s reached 0.59 held-out on this tower
#: against 0.40 training its own, and 0.44 on the tower of a 64-wide, 2-layer captioner (too weak a decoder
#: to teach its tower shapes and textures). A longer tower sees better but adapts worse: see
#: docs/lab/2026-12-05-zoo-recipe.md, "A better-reading zoo that adapts worse" (1800 steps, 32k rows, lr 1e-3:
#: held-out 0.83, members 0.76-0.78, yet only 18 of 47 tasks in the calibration band against 25 on this one,
#: same machine).
SIGLIP_TOWER = ModelSpec("tiny-siglip-captioner", "qwen2", **_TOWER, text_hidden=128, text_layers=3, text_heads=4,
                         text_kv_heads=1, text_ffn=352)  # fmt: skip
#: members train their text model and projector only, so they need half the steps of a full model. The
#: smallest member takes a higher learning rate, as small members of real families do (measured, 450 steps,
#: seed 0: tiny-llama-s 0.540 held-out at lr 2e-3, 0.563 at 3e-3; at batch 32, 3e-3 gave 0.488). Longer
#: reads more of what the tower holds but adapts worse: tiny-llama-m at 900 steps (held-out 0.75) put 28 of 47
#: tasks in the calibration band against 34 at 450 (seed 0; docs/lab/2026-12-05-zoo-recipe.md)
_MEMBER = dict(**_TOWER, tower=SIGLIP_TOWER, recipe=Recipe(steps=450))
# Llama: full multi-head attention; Qwen2: grouped-query attention (1 KV head), like their real namesakes.
# fmt: off
register_model(ModelSpec("tiny-llama-s", "llama", **{**_MEMBER, "recipe": Recipe(steps=450, lr=3e-3)}, text_hidden=96,
                         text_layers=3, text_heads=3, text_kv_heads=3, text_ffn=288))
register_model(ModelSpec("tiny-llama-m", "llama", **_MEMBER, text_hidden=128, text_layers=5, text_heads=4,
                         text_kv_heads=4, text_ffn=384))
register_model(ModelSpec("tiny-qwen-s", "qwen2", **_MEMBER, text_hidden=128, text_layers=3, text_heads=4,
                         text_kv_heads=1, text_ffn=352))
register_model(ModelSpec("tiny-qwen-m", "qwen2", **_MEMBER, text_hidden=160, text_layers=4, text_heads=5,
                         text_kv_heads=1, text_ffn=448))
# fmt: on


def get_spec(name: str) -> ModelSpec:
    if name not in ZOO:
        raise UnknownNameError(
            f"unknown model {name!r}{did_you_mean(name, ZOO)}; zoo members: {', '.join(sorted(ZOO))} "
            "(or pass a local folder or a hub id such as 'llava-hf/llava-interleave-qwen-0.5b-hf')"
        )
    return ZOO[name]


def models_home() -> Path:
    """The cache of members ``drake pretrain`` trains on this machine: ``<drake_home()>/models`` ($DRAKE_HOME,
    else <checkout>/.drake, else ~/.cache/drake). The shipped zoo is not here: see drake/models/zoo_manifest.py."""
    from drake.paths import drake_home

    return drake_home() / "models"


def build_config(
    spec: ModelSpec,
    vocab_size: int,
    image_token_id: int,
    pad_token_id: int,
    bos_token_id: int,
    eos_token_id: int,
):
    """The ``LlavaConfig`` of a member (see reference/tiny_vlm.md for the settings that matter)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, Qwen2Config, SiglipVisionConfig

    vkw = dict(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_ffn or 4 * spec.vision_hidden,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        num_channels=3,
    )
    if spec.vision == "clip":
        vision = CLIPVisionConfig(**vkw, projection_dim=spec.vision_hidden)
        strategy = "default"  # drop CLS
    else:
        vision = SiglipVisionConfig(**vkw, vision_use_head=False)
        strategy = "full"  # no CLS: keep every patch
    tkw = dict(
        vocab_size=vocab_size,
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_ffn,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )
    text = LlamaConfig(**tkw) if spec.family == "llama" else Qwen2Config(**tkw)
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        image_seq_length=spec.image_tokens,
        projector_hidden_act="gelu",
        vision_feature_select_strategy=strategy,
        vision_feature_layer=-1,
        tie_word_embeddings=True,
    )


def build_processor(spec: ModelSpec, tokenizer):
    """A ``LlavaProcessor`` whose image placeholders expand to exactly ``spec.image_tokens`` tokens."""
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    size = {"height": spec.image_size, "width": spec.image_size}
    if spec.vision == "clip":
        image_processor = CLIPImageProcessorPil(size=size, do_center_crop=False, crop_size=size)
        strategy, extra = "default", 1
    else:
        image_processor = SiglipImageProcessorPil(size=size)
        strategy, extra = "full", 0
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=extra,
    )


def build_model(spec: ModelSpec | str, tokenizer=None, *, seed: int | None = None):
    """A randomly initialised member and its processor, built from configs only (no download).

    Without a tokenizer, the project vocabulary is used (built and cached on first use).
    Returns ``(model, processor)``.
    """
    import torch
    from transformers import LlavaForConditionalGeneration

    from drake.models.tokenizer import default_vocab, make_tokenizer

    spec = get_spec(spec) if isinstance(spec, str) else spec
    tokenizer = tokenizer if tokenizer is not None else make_tokenizer(default_vocab())
    config = build_config(
        spec,
        vocab_size=len(tokenizer),
        image_token_id=tokenizer.image_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if seed is not None:
        torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model, build_processor(spec, tokenizer)


def count_parameters(model) -> dict[str, int]:
    """Parameters by part (vision tower, projector, text model incl. tied head) and in total."""
    parts = {"vision": 0, "projector": 0, "text": 0}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        key = (
            "vision" if "vision_tower" in name else "projector" if "multi_modal_projector" in name else "text"
        )
        parts[key] += p.numel()
    parts["total"] = sum(parts.values())
    return parts
