"""FedMKT: token alignment across two tokenizers (identity for identical ones; mass on the right tokens when
the vocabularies and segmentations differ), DualMinCE, and distillation on public rows lowering the KL to the
selected targets on the server and on a client (shipped pre-trained zoo: untrained models give near-uniform
outputs whose KL barely moves)."""

from __future__ import annotations

import math

import pytest
import torch

from baselines._token_align import TokenAligner, VocabMap, align_blocks, dense
from baselines.fedmkt import FedMKT, FedMKTConfig, Knowledge, dual_min_ce, knowledge, soft_kl
from drake.errors import SpecError
from drake.fl.client import ArchModel, ClientRuntime, ClientState
from drake.fl.method import ServerState
from drake.fl.types import ClientInfo, ClientUpdate, RoundContext
from drake.spec import load_scenario
from tests.zoo_kd import attach_zoo

ARCHS = {0: "tiny-llama-s", 1: "tiny-llama-m", 2: "tiny-llama-s"}  # two architectures, one tokenizer
ANSWER = " reddish blue"


# ------------------------------------------------------------------------------- two small tokenizers


def _word_level():
    """A: whole words (the project's tokenizer kind): ``reddish`` is one token, ``colour`` is British."""
    from drake.models.tokenizer import make_tokenizer

    return make_tokenizer(["a", "blue", "colour", "dish", "reddish"])


def _word_piece():
    """B: WordPiece with a smaller vocabulary: ``reddish`` -> ``red ##dish``; ``color`` is American."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from drake.models.tokenizer import BOS, EOS, IMAGE, PAD, SPECIALS, UNK, _pre_tokenizer

    words = [*SPECIALS, "a", "blue", "color", "dish", "red", "##dish", "##ish"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token=UNK, continuing_subword_prefix="##"))
    tok.pre_tokenizer = _pre_tokenizer()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   extra_special_tokens={"image_token": IMAGE})  # fmt: skip


def _gold(tok, text: str = ANSWER) -> torch.Tensor:
    return torch.tensor(tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])


def _top(tok, *rows: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k ids and logits (log-probabilities) of the given per-position distributions."""
    k = max(len(r) for r in rows)
    ids, logits = torch.zeros(len(rows), k, dtype=torch.long), torch.full((len(rows), k), -1e9)
    for i, r in enumerate(rows):
        for j, (token, p) in enumerate(r.items()):
            ids[i, j], logits[i, j] = tok.convert_tokens_to_ids(token), math.log(p)
    return ids, logits


def _dist(tok, out_row: torch.Tensor) -> dict[str, float]:
    return {tok.convert_ids_to_tokens(i): round(float(out_row[i]), 6) for i in torch.nonzero(out_row).flatten().tolist()}


def test_the_two_tokenizers_segment_the_answer_differently() -> None:
    a, b = _word_level(), _word_piece()
    assert a.convert_ids_to_tokens(_gold(a).tolist()) == ["reddish", "blue", "</s>"]
    assert b.convert_ids_to_tokens(_gold(b).tolist()) == ["red", "##dish", "blue", "</s>"]


@pytest.mark.parametrize("make", [_word_level, _word_piece])
def test_identical_tokenizers_give_the_identity(make) -> None:
    """Two instances of one tokenizer: every position keeps its distribution (full vocabulary and top-k)."""
    src, tgt = make(), make()
    gold = _gold(src)
    logits = torch.randn(len(gold), len(src), generator=torch.Generator().manual_seed(0)) * 3
    aligner = TokenAligner(src, tgt)
    full = logits.topk(len(src))
    out = aligner(gold, full.indices, full.values, _gold(tgt), len(tgt))
    torch.testing.assert_close(out, torch.softmax(logits, -1), atol=1e-6, rtol=0)
    top = logits.topk(3)
    torch.testing.assert_close(aligner(gold, top.indices, top.values, _gold(tgt), len(tgt)),
                               dense(top.indices, top.values, len(tgt)), atol=0, rtol=0)  # fmt: skip
    assert all(aligner.map(i) == i for i in range(len(src)))


def test_word_level_to_word_piece_maps_mass_to_the_right_tokens() -> None:
    a, b = _word_level(), _word_piece()
    ids, logits = _top(a, {"reddish": 0.6, "blue": 0.3, "colour": 0.1}, {"blue": 0.8, "dish": 0.2}, {"</s>": 1.0})
    out = TokenAligner(a, b)(_gold(a), ids, logits, _gold(b), len(b))
    assert out.shape == (4, len(b))
    torch.testing.assert_close(out.sum(-1), torch.ones(4))
    # "reddish" (1 token) <-> "red ##dish" (2): the first piece takes the distribution, the gold "reddish"
    # mass goes to the gold "red", "colour" to its nearest spelling "color"; "##dish" is one-hot (fallback)
    assert _dist(b, out[0]) == {"red": 0.6, "blue": 0.3, "color": 0.1}
    assert _dist(b, out[1]) == {"##dish": 1.0}
    assert _dist(b, out[2]) == {"blue": 0.8, "dish": 0.2}
    assert _dist(b, out[3]) == {"</s>": 1.0}


def test_word_piece_to_word_level_maps_mass_to_the_right_tokens() -> None:
    a, b = _word_level(), _word_piece()
    ids, logits = _top(b, {"red": 0.7, "blue": 0.2, "color": 0.1}, {"##dish": 0.9, "##ish": 0.1},
                       {"blue": 0.5, "dish": 0.5}, {"</s>": 1.0})  # fmt: skip
    out = TokenAligner(b, a)(_gold(b), ids, logits, _gold(a), len(a))
    torch.testing.assert_close(out.sum(-1), torch.ones(3))
    assert _dist(a, out[0]) == {"reddish": 0.7, "blue": 0.2, "colour": 0.1}  # 2 pieces -> 1 word: the first
    assert _dist(a, out[1]) == {"blue": 0.5, "dish": 0.5}
    assert _dist(a, out[2]) == {"</s>": 1.0}


def test_vocab_map_by_role_exact_and_minimum_edit_distance() -> None:
    a, b = _word_level(), _word_piece()
    aligner = TokenAligner(a, b)
    m: VocabMap = aligner.map
    ids = {t: a.convert_tokens_to_ids(t) for t in ("</s>", "<pad>", "blue", "colour", "reddish")}
    assert m(ids["</s>"]) == b.eos_token_id and m(ids["<pad>"]) == b.pad_token_id
    assert m(ids["blue"]) == b.convert_tokens_to_ids("blue")
    assert m(ids["colour"]) == b.convert_tokens_to_ids("color")  # distance 1
    assert m(ids["reddish"]) == b.convert_tokens_to_ids("##dish")  # distance 3 < 4 ("red"): MinED's choice
    summed = aligner(_gold(a), *_top(a, {"reddish": 0.5, "dish": 0.5}, {"blue": 1.0}, {"</s>": 1.0}), _gold(b), len(b))
    assert _dist(b, summed[0]) == {"red": 0.5, "dish": 0.5}


def test_blocks_are_cut_at_common_boundaries() -> None:
    assert align_blocks(["reddish", "blue"], ["red", "dish", "blue"]) == [
        (range(0, 1), range(0, 2), True), (range(1, 2), range(2, 3), True)]  # fmt: skip
    assert align_blocks(["ab", "cd"], ["abc", "x"]) == [(range(0, 2), range(0, 2), False)]  # no common boundary
    assert align_blocks(["ab", "xy"], ["ab", "cd", "e"]) == [  # texts differ after "ab"; a tail with no source
        (range(0, 1), range(0, 1), True), (range(1, 2), range(1, 2), False), (range(2, 2), range(2, 3), False)]
    # a bare word-start marker (no text of its own) before a digit: the same tokens align 1:1, not as one block
    assert align_blocks(["", "3", "x"], ["", "3", "x"]) == [(range(i, i + 1), range(i, i + 1), True) for i in range(3)]
    assert align_blocks(["", "3"], ["3"]) == [(range(0, 2), range(0, 1), True)]  # other tokenizers: still a block


def test_dual_min_ce_keeps_the_best_source_only_where_it_beats_the_receiver() -> None:
    own = torch.tensor([1.0, 0.5, 2.0, 0.7])
    others = {3: torch.tensor([0.8, 0.9, 2.5, 0.6]), 1: torch.tensor([0.9, 0.4, 2.5, 0.6])}
    assert dual_min_ce(own, others) == [3, 1, None, 1]  # a tie goes to the lower key
    assert dual_min_ce(own, {}) == [None] * 4


def test_knowledge_round_trips_through_the_wire() -> None:
    g = torch.Generator().manual_seed(1)
    kn = Knowledge([torch.tensor([4, 5]), torch.tensor([6])], [torch.randint(0, 9, (2, 3), generator=g),
                   torch.randint(0, 9, (1, 3), generator=g)], [torch.randn(2, 3, generator=g), torch.randn(1, 3, generator=g)],
                   torch.tensor([0.3, 0.2]))  # fmt: skip
    back = Knowledge.unpack(kn.pack())
    assert back is not None and len(back.gold) == 2
    for x, y in zip([*kn.gold, *kn.top_ids, *kn.top_logits, kn.ce], [*back.gold, *back.top_ids, *back.top_logits, back.ce]):
        assert torch.equal(x, y)
    assert Knowledge.unpack({}) is None


def test_soft_kl_is_zero_on_its_own_distribution() -> None:
    logits = torch.randn(4, 7, generator=torch.Generator().manual_seed(2))
    assert float(soft_kl(logits, torch.softmax(logits, -1))) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_kl(logits, torch.softmax(logits.flip(-1), -1))) > 0.1


# ------------------------------------------------------------------------ distillation on the zoo


@pytest.fixture(scope="module")
def public() -> list[dict]:
    from drake.models.pretrain import draw_rows

    return draw_rows("train", 48, 0, 32)  # 32 exchanged and distilled on, 16 held out


def _setup(config: FedMKTConfig, public: list[dict]):
    method = FedMKT(config)
    archs = attach_zoo(method, ARCHS.values(), public[:32])  # the initial adapters (LoRA B = 0: the base models) start the server models
    states, updates = {}, []
    for cid, arch in ARCHS.items():  # three "trained" clients: perturbed LoRA states of their architecture
        g = torch.Generator().manual_seed(cid + 1)
        states[cid] = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in archs[arch].adapter.get_state().items()}
        archs[arch].adapter.set_state(states[cid])
        kn, _ = knowledge(archs[arch], public[:32], 8, config.top_k)
        updates.append(ClientUpdate(cid, {}, 10, {"compute_units": 8.0}, kn.pack()))
    clients = {cid: ClientInfo(cid, arch, ("t",)) for cid, arch in ARCHS.items()}
    ctx = RoundContext(0, load_scenario("smoke"), 0, tuple(ARCHS), clients)
    return method, archs, states, updates, ctx


def _held_out(method: FedMKT, am: ArchModel, arch: str, rows, sources) -> tuple[list[torch.Tensor], float]:
    """DualMinCE targets of ``rows`` chosen against ``am`` as it is, and its KL to them."""
    own, full = knowledge(am, rows, 8, method.config.top_k)
    targets, taken = method.targets(arch, own, sources)
    assert taken > 0
    return targets, float(soft_kl(torch.cat(full), torch.cat(targets)))


def _noisy(state: dict[str, torch.Tensor], scale: float, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: v + torch.randn(v.shape, generator=g) * scale for k, v in state.items()}


def test_server_distillation_lowers_the_kl_to_the_selected_targets(public) -> None:
    """Server models that lag behind their clients (perturbed adapters) learn the clients' outputs: on the
    distilled rows and on held-out rows (targets chosen once, before distilling)."""
    cfg = FedMKTConfig(kd_samples=32, kd_batch=8, server_kd_epochs=3)
    method, archs, states, updates, ctx = _setup(cfg, public)
    lagging = {a: _noisy(method._initial[a], 0.1, 7) for a in archs}
    held_out = public[32:]
    held_sources = {}
    for cid, arch in ARCHS.items():
        archs[arch].adapter.set_state(states[cid])
        held_sources[cid] = (arch, knowledge(archs[arch], held_out, 8, cfg.top_k)[0])
    before, targets = {}, {}
    for arch, am in archs.items():  # the server models' targets on held-out rows, fixed before distilling
        am.adapter.set_state(lagging[arch])
        targets[arch], before[arch] = _held_out(method, am, arch, held_out, held_sources)
    server = method.aggregate(ctx, ServerState(per_arch=dict(lagging)), updates)
    (rnd,) = server.method_state["fedmkt"]["rounds"]
    for arch, am in archs.items():
        log = rnd["archs"][arch]
        assert log["rows_from_clients"] > 0 and log["steps"] == 12
        assert log["kl_after"] < 0.8 * log["kl_before"], (arch, log)
        am.adapter.set_state(server.per_arch[arch])
        after = float(soft_kl(torch.cat(knowledge(am, held_out, 8, 0)[1]), torch.cat(targets[arch])))
        assert after < 0.8 * before[arch], (arch, before[arch], after)
    # the new server knowledge goes back to each architecture's clients; compute is recorded
    payloads = method.configure_round(ctx, server)
    for cid, arch in ARCHS.items():
        assert payloads[cid].config["teacher"] == arch and len(payloads[cid].config["public"]) == 32
        kn = Knowledge.unpack(payloads[cid].arrays)
        assert kn is not None and len(kn.ce) == 32
    assert rnd["server_units"] == pytest.approx(2 * (2 * 32 / 3 + 3 * 32))
    assert server.method_state["fedmkt"]["server_ratio_to_client_training"] == pytest.approx(rnd["server_units"] / 24)


class _Stream:
    """No private data: ``local_steps=0`` below leaves only the public-row distillation and the upload."""

    num_examples_seen = 8

    def batches(self, round_idx: int, steps: int) -> list:
        return []


def test_client_distils_from_its_server_model_and_uploads_its_knowledge(public) -> None:
    cfg = FedMKTConfig(kd_samples=32, kd_batch=8, local_steps=0, client_kd_epochs=3)
    method, archs, states, updates, ctx = _setup(cfg, public)
    server = method.aggregate(ctx, ServerState(), updates)
    payload = method.configure_round(ctx, server)[0]
    am = archs[ARCHS[0]]
    am.adapter.set_state(states[0])
    state = ClientState(method_state={"fedmkt": updates[0].side_info})  # its upload of the last round
    rt = ClientRuntime(ctx.clients[0], am, {}, _Stream(), state, seed=0, round_idx=1, lr=2e-3,  # type: ignore[arg-type]
                       weight_decay=0.0, max_grad_norm=1.0, batch_size=8)  # fmt: skip
    rows = public[:32]
    own = Knowledge.unpack(updates[0].side_info)
    teacher = Knowledge.unpack(payload.arrays)
    assert own is not None and teacher is not None
    targets, taken = method.targets(ARCHS[0], own, {0: (ARCHS[0], teacher)})
    assert taken > 0  # the distilled server model beats this client on some rows
    kl_before = float(soft_kl(torch.cat(knowledge(am, rows, 8, 0)[1]), torch.cat(targets)))
    upd = method.client_update(ctx, rt, payload)
    kl_after = float(soft_kl(torch.cat(knowledge(am, rows, 8, 0)[1]), torch.cat(targets)))
    assert kl_after < 0.8 * kl_before, (kl_before, kl_after)
    assert upd.arrays == {} and upd.metrics["kd_steps"] == 12 and upd.metrics["kd_rows_from_server"] == taken
    mine = Knowledge.unpack(upd.side_info)
    assert mine is not None and len(mine.ce) == 32 and rt.state.method_state["fedmkt"] is upd.side_info
    assert upd.metrics["compute_units"] == pytest.approx(3 * 32 + 32 / 3)


def test_one_server_llm_teaches_every_client(public) -> None:
    """``server_models=largest``: the paper's single server LLM (the pool's largest architecture)."""
    cfg = FedMKTConfig(kd_samples=32, kd_batch=8, local_steps=0, server_models="largest")
    method, archs, states, updates, ctx = _setup(cfg, public)
    assert method.teachers(ctx.clients) == dict.fromkeys(ARCHS, "tiny-llama-m")
    server = method.aggregate(ctx, ServerState(), updates)
    assert set(server.per_arch) == set(server.method_state["fedmkt"]["rounds"][0]["archs"]) == {"tiny-llama-m"}
    payload = method.configure_round(ctx, server)[0]  # client 0 is a tiny-llama-s
    assert payload.config["teacher"] == "tiny-llama-m"
    archs["tiny-llama-s"].adapter.set_state(states[0])
    rt = ClientRuntime(ctx.clients[0], archs["tiny-llama-s"], {}, _Stream(), ClientState(), seed=0, round_idx=1,  # type: ignore[arg-type]
                       lr=2e-3, weight_decay=0.0, max_grad_norm=1.0, batch_size=8)  # fmt: skip
    upd = method.client_update(ctx, rt, payload)
    assert upd.metrics["kd_steps"] == 4 and upd.metrics["compute_units"] == pytest.approx(2 * 32 / 3 + 32)


def test_compute_ratio_and_bad_settings() -> None:
    # 12 x 8 private examples + one distillation epoch and one forward over 32 public rows, over 20 x 8
    assert FedMKT().compute_ratio_to_local() == pytest.approx((12 * 8 + 32 + 32 / 3) / (20 * 8))
    with pytest.raises(SpecError, match="server_models='llm' is not one of per_arch, largest"):
        FedMKTConfig(server_models="llm")
    with pytest.raises(SpecError, match="lm_weight=1.5 must be in"):
        FedMKTConfig(lm_weight=1.5)
    with pytest.raises(SpecError, match="top_k=-1 must be >= 0"):
        FedMKTConfig(top_k=-1)
