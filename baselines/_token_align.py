"""Token alignment between two tokenizers (FedMKT's bidirectional token alignment, after FuseLLM).

A source model's output distributions at the answer positions of a public row are moved onto the target
tokenizer's answer tokens in two steps:

1. **Sequence alignment.** Both tokenizers split the same answer text. Token strings are reduced to their
   characters (word-start markers ``▁``/``Ġ`` and the ``##`` continuation prefix dropped, special tokens
   replaced by their role) and the two sequences are cut into blocks at the character offsets where both
   have a token boundary. A block whose two texts agree is verified: its first target position takes the
   distribution at its first source position (1:1, 1:n and n:1 segmentations alike). Later target positions of a
   block (the target splits finer) and positions of unverified blocks get a one-hot on their gold token,
   FuseLLM/FATE-LLM's fallback. FATE-LLM's ``greedy_dp`` matches tokens by a DP over string prefixes; on
   one answer text the common-boundary cut finds the same blocks without a DP.
2. **Vocabulary mapping (MinED).** Every other token of the source's top-k maps to the target token with
   the minimum edit distance between the token strings (exact matches first; word-start markers unified;
   special tokens by role: EOS to EOS, ...), computed lazily for the tokens that occur and memoised. The
   source's gold token at a verified block maps to the target's gold token there (the block says they start
   the same text; a string distance can miss that, e.g. ``dish`` vs ``##dish``). Probability mass of source
   tokens that map to one target token is summed, so each aligned row is a distribution.

Identical tokenizers give the identity: every block is 1:1 and every token maps to itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import torch

MARKERS = ("\u2581", "\u0120")  # SentencePiece "▁", byte-level BPE "Ġ": a token that starts a word
CONTINUATION = "##"  # WordPiece: a token that continues a word
ROLES = ("bos", "eos", "pad", "unk")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (unit insert, delete, substitute)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _roles(tok: Any) -> dict[int, str]:
    """Special token id -> its role (``bos``, ``eos``, ...; other specials: their own string)."""
    out: dict[int, str] = {}
    for token in getattr(tok, "all_special_tokens", []):
        out[int(tok.convert_tokens_to_ids(token))] = token
    for role in ROLES:
        tid = getattr(tok, f"{role}_token_id", None)
        if tid is not None:
            out[int(tid)] = role
    return out


def unify(token: str) -> str:
    """The token string with its word-start marker written one way (what MinED compares)."""
    return MARKERS[1] + token[1:] if token[:1] in MARKERS else token


def text_key(token: str) -> str:
    """The characters a token contributes to the text (markers and continuation prefix dropped)."""
    if token[:1] in MARKERS:
        return token[1:]
    return token[len(CONTINUATION) :] if token.startswith(CONTINUATION) and len(token) > len(CONTINUATION) else token


class Vocab:
    """One tokenizer's view for alignment: token strings, special roles and MinED candidates by length."""

    def __init__(self, tok: Any) -> None:
        vocab = tok.get_vocab()
        self.size = max(vocab.values()) + 1
        self.tokens = [""] * self.size
        for token, i in vocab.items():
            self.tokens[i] = token
        self.roles = _roles(tok)
        self.by_role = {role: i for i, role in self.roles.items()}
        self.exact: dict[str, int] = {}
        self.by_length: dict[int, list[tuple[str, int]]] = {}
        for i, token in enumerate(self.tokens):
            if i in self.roles or not token:
                continue
            u = unify(token)
            if u not in self.exact or i < self.exact[u]:
                self.exact[u] = i
            self.by_length.setdefault(len(u), []).append((u, i))

    def key(self, i: int) -> str:
        """The text key of token ``i`` (a special token's is its role in NUL brackets)."""
        role = self.roles.get(i)
        return f"\x00{role}\x00" if role is not None else text_key(self.tokens[i])


class VocabMap:
    """Source token id -> target token id: special tokens by role, then exact string match, then minimum edit
    distance (ties: the lowest target id), memoised; candidates are scanned by growing length difference, which
    bounds the distance from below."""

    def __init__(self, src: Vocab, tgt: Vocab) -> None:
        self.src, self.tgt = src, tgt
        self._memo: dict[int, int] = {}

    def __call__(self, i: int) -> int:
        if i not in self._memo:
            self._memo[i] = self._map(i)
        return self._memo[i]

    def _map(self, i: int) -> int:
        role = self.src.roles.get(i)
        if role is not None and role in self.tgt.by_role:
            return self.tgt.by_role[role]
        u = unify(self.src.tokens[i]) if i < self.src.size else ""
        if u in self.tgt.exact:
            return self.tgt.exact[u]
        best, best_id = None, self.tgt.by_role.get("unk", 0)
        lengths = sorted(self.tgt.by_length, key=lambda n: (abs(n - len(u)), n))
        for n in lengths:
            if best is not None and abs(n - len(u)) >= best:
                break
            for s, j in self.tgt.by_length[n]:
                d = edit_distance(u, s)
                if best is None or d < best or (d == best and j < best_id):
                    best, best_id = d, j
        return best_id

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self(int(i)) for i in ids.reshape(-1)], dtype=torch.long).reshape(ids.shape)


def align_blocks(src: Sequence[str], tgt: Sequence[str]) -> list[tuple[range, range, bool]]:
    """Cut two token-text sequences at their common character boundaries: (source positions, target positions,
    whether the two texts of the block agree). A tail past the last common boundary is one unverified block.
    A verified block of the same tokens on both sides is cut 1:1: a token with no text of its own (a bare
    word-start marker, as Llama-3 and Qwen2.5 put before a digit) shares its boundary with the next token,
    and would otherwise hand the next position a one-hot even between identical tokenizers."""
    cs, ct = list(accumulate(len(k) for k in src)), list(accumulate(len(k) for k in tgt))
    blocks: list[tuple[range, range, bool]] = []
    i = j = 0
    for c in sorted((set(cs) & set(ct)) - {0}):
        i2, j2 = i, j
        while i2 < len(src) and cs[i2] <= c:
            i2 += 1
        while j2 < len(tgt) and ct[j2] <= c:
            j2 += 1
        if list(src[i:i2]) == list(tgt[j:j2]):
            blocks += [(range(a, a + 1), range(b, b + 1), True) for a, b in zip(range(i, i2), range(j, j2))]
        else:
            blocks.append((range(i, i2), range(j, j2), "".join(src[i:i2]) == "".join(tgt[j:j2])))
        i, j = i2, j2
    if i < len(src) or j < len(tgt):
        blocks.append((range(i, len(src)), range(j, len(tgt)), False))
    return blocks


def dense(top_ids: torch.Tensor, top_logits: torch.Tensor, width: int, temperature: float = 1.0) -> torch.Tensor:
    """Per position, softmax(top-k logits / T) scattered onto a ``width``-wide vocabulary (zero elsewhere)."""
    probs = torch.softmax(top_logits.float() / temperature, dim=-1)
    return torch.zeros(top_ids.shape[0], width).scatter_add_(1, top_ids.long(), probs)


class TokenAligner:
    """Moves a source model's answer-position distributions (top-k ids and logits, gold ids) onto a target
    tokenizer's answer tokens (gold ids), as the module docstring describes."""

    def __init__(self, src_tok: Any, tgt_tok: Any) -> None:
        self.src, self.tgt = Vocab(src_tok), Vocab(tgt_tok)
        self.map = VocabMap(self.src, self.tgt)

    def __call__(
        self, src_gold: torch.Tensor, top_ids: torch.Tensor, top_logits: torch.Tensor, tgt_gold: torch.Tensor,
        width: int, temperature: float = 1.0,
    ) -> torch.Tensor:
        """(len(tgt_gold), width) target distributions, one per target answer position."""
        probs = torch.softmax(top_logits.float() / temperature, dim=-1)
        sg, tg = [int(i) for i in src_gold], [int(i) for i in tgt_gold]
        out = torch.zeros(len(tg), width)
        blocks = align_blocks([self.src.key(i) for i in sg], [self.tgt.key(i) for i in tg])
        for src_pos, tgt_pos, verified in blocks:
            rest = list(tgt_pos)
            if verified:
                i0, j0 = src_pos.start, rest.pop(0)
                ids = self.map.lookup(top_ids[i0])
                ids = torch.where(top_ids[i0].long() == sg[i0], torch.full_like(ids, tg[j0]), ids)
                out[j0].scatter_add_(0, ids, probs[i0])
            for j in rest:
                out[j, tg[j]] = 1.0
        return out
