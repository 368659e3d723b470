"""A word-level tokenizer over the DRAKE-synth vocabulary, saved as a normal HF tokenizer.

Why word-level: the synthetic text has a few hundred distinct words, so one token per word keeps sequences
short (a 2-core CPU budget) and makes every answer a few tokens. Punctuation is split into its own tokens
(``Choice list:[a, b]`` -> ``Choice list : [ a , b ]``) so ``red`` and ``red,`` share one embedding.

Why cased (no lower-casing): answers are decoded by greedy generation and compared with the gold string,
and option letters (``A``), ``True``/``False`` and ``Image A`` must round-trip; lower-casing would also merge
the option letter ``A`` with the article ``a``. The cost, a few capitalised duplicates, is a handful of rows.

The vocabulary is sorted (deterministic) and covers: the world's words, integers 0-100, the public split,
and the prompts, choices and answers of train samples of every task in tasks.yaml. It is committed as
``vocab.txt`` (a real model's tokenizer is fixed too); ``build_vocab`` is how it was made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from drake.io import atomic_write_text

PAD, UNK, BOS, EOS, IMAGE = "<pad>", "<unk>", "<s>", "</s>", "<image>"
SPECIALS = (PAD, UNK, BOS, EOS, IMAGE)
#: the frozen word list (one per line, sorted). It is part of every zoo member's cache key, so it is a file,
#: not a function of the generators: redesigning a task must not silently re-train the zoo. A new word needs
#: ``python -m drake.models.tokenizer`` (rewrites the file) and a re-trained zoo; test_models checks that every
#: task's text is covered.
VOCAB_FILE = Path(__file__).resolve().parent / "vocab.txt"
N_PER_TASK = 300
N_PUBLIC = 3000


def _pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])


_PRE = None


def words_of(text: str) -> list[str]:
    """The word tokens of ``text`` (image placeholders removed), exactly as the tokenizer splits them."""
    global _PRE
    if _PRE is None:
        _PRE = _pre_tokenizer()
    return [w for w, _ in _PRE.pre_tokenize_str(text.replace(IMAGE, " "))]


def world_words() -> set[str]:
    """Words of the shared world and small integers, so rare combinations never hit <unk>."""
    from drake.data.synth import world

    words: set[str] = set()
    for group in (
        world.COLORS,
        world.SHAPES,
        world.TEXTURES,
        world.GARMENTS,
        world.SIZES,
        world.POSITIONS,
        world.BACKGROUNDS,
    ):
        words.update(group)
    words.update(str(i) for i in range(101))
    words.update(chr(c) for c in range(ord("A"), ord("Z") + 1))
    words.update(("True", "False", "yes", "no", "Yes", "No"))
    return words


def _task_texts(n_per_task: int, seed: int) -> Iterator[str]:
    import drake.data.synth.families  # noqa: F401  (registers the families)
    from drake.data.synth.base import FAMILIES, SampleContext
    from drake.spec import load_tasks

    for spec in load_tasks().values():
        synth = spec.sources["synth"]
        family = FAMILIES.get(synth.family)
        for i in range(n_per_task):
            s = family(SampleContext(spec.name, "train", i, seed, 32, spec.images), **dict(synth.params))
            yield s.prompt
            yield s.answer
            yield from s.choices or ()


def _public_texts(n_public: int, seed: int) -> Iterator[str]:
    from drake.data.synth.public import WORD_PROMPT, public_context, public_sample

    yield WORD_PROMPT
    for split, n in (("train", n_public), ("test", n_public // 4)):
        for i in range(n):
            s = public_sample(public_context(split, i, seed))
            yield s.prompt
            yield s.answer
            yield from s.choices or ()


def build_vocab(n_per_task: int = N_PER_TASK, n_public: int = N_PUBLIC, seed: int = 0) -> list[str]:
    """Sorted word list (specials excluded) over the world, the public split and every task's train text.

    What ``VOCAB_FILE`` was made from; ``python -m drake.models.tokenizer`` rewrites it (then re-train the zoo).
    """
    words = world_words()
    for text in _iter_all(n_per_task, n_public, seed):
        words.update(words_of(text))
    words.difference_update(SPECIALS)
    return sorted(words)


def _iter_all(n_per_task: int, n_public: int, seed: int) -> Iterable[str]:
    yield from _public_texts(n_public, seed)
    yield from _task_texts(n_per_task, seed)


def default_vocab() -> list[str]:
    """The project vocabulary: the committed word list every zoo model was trained with."""
    return VOCAB_FILE.read_text().split()


def make_tokenizer(words: Iterable[str], model_max_length: int = 2048):
    """A ``PreTrainedTokenizerFast`` (word level, specials first, then ``words`` in sorted order)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    ordered = list(SPECIALS) + sorted(set(words) - set(SPECIALS))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(ordered)}, unk_token=UNK))
    tok.pre_tokenizer = _pre_tokenizer()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        extra_special_tokens={"image_token": IMAGE},
        model_max_length=model_max_length,
        padding_side="right",
    )


_OPEN = r"[(\[{_/'-]"
_CLOSE = r"[,.;:!?%)\]}_/'-]"


def detokenize(text: str) -> str:
    """Undo the word-level spacing of a decoded string: ``Image A , 3 - 4 .`` -> ``Image A, 3-4.``"""
    text = re.sub(rf"\s+({_CLOSE})", r"\1", text)
    text = re.sub(rf"({_OPEN})\s+", r"\1", text)
    return " ".join(text.split())


if __name__ == "__main__":
    words = build_vocab()
    atomic_write_text(VOCAB_FILE, "\n".join(words) + "\n")
    print(f"wrote {len(words)} words to {VOCAB_FILE}")
