"""Logits processors and the token chooser: each processor against a plain reference and HF
transformers, guidance, seeded draws (batched == one by one, the right distribution), validation,
and no host sync."""

from __future__ import annotations

import math

import pytest
import torch

from mot.errors import MotError
from mot.generate.logits import (AllowedTokens, GenerationError, LogitsProcessorList, RepetitionPenalty, Sampling,
                                 Temperature, TokenChooser, TopK, TopP, guided, processors_for)

from tests.helpers import SYNCING_OPS, RecordOps

INF = float("inf")


def random_logits(batch=4, vocab=50, seed=0, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, vocab, generator=generator) * scale


def random_seen(batch=4, vocab=50, seed=0):
    generator = torch.Generator().manual_seed(seed + 1)
    return torch.rand(batch, vocab, generator=generator) < 0.3


def finite_count(logits):
    return torch.isfinite(logits).sum(dim=-1).tolist()


# ---- references ----------------------------------------------------------------------------------


def reference_top_k(row, k):
    """The ids of the k best tokens of ``row``, ties toward the lower id (k 0: all)."""
    ranked = sorted(range(len(row)), key=lambda i: (-row[i], i))
    return set(ranked if k == 0 else ranked[:k])


def reference_top_p(row, p):
    """The ids of the smallest set of best tokens whose probability reaches p, ties toward the lower id."""
    probs = torch.softmax(torch.tensor(row, dtype=torch.float64), dim=0).tolist()
    ranked = sorted(range(len(row)), key=lambda i: (-probs[i], i))
    kept, mass = set(), 0.0
    for i in ranked:
        kept.add(i)
        mass += probs[i]
        if mass >= p:
            break
    return set(ranked) if p == 1 else kept


def kept_ids(row):
    return {i for i, v in enumerate(row.tolist()) if v != -INF}


# ---- repetition penalty --------------------------------------------------------------------------


def test_repetition_penalty_matches_hf_per_row():
    transformers = pytest.importorskip("transformers")
    logits, seen = random_logits(), random_seen()
    penalties = [1.0, 1.3, 0.7, 2.5]
    ours = RepetitionPenalty(torch.tensor(penalties, dtype=torch.float64))(logits, seen)
    for row, penalty in enumerate(penalties):
        ids = seen[row].nonzero()[:, 0][None]
        theirs = transformers.RepetitionPenaltyLogitsProcessor(penalty)(ids, logits[row:row + 1].clone())
        torch.testing.assert_close(ours[row:row + 1], theirs)
        alone = RepetitionPenalty(penalty)(logits[row:row + 1], seen[row:row + 1])
        assert torch.equal(alone, ours[row:row + 1])  # a number and a per-row tensor give the same bits
    assert torch.equal(ours[0], logits[0])  # penalty 1: unchanged
    assert torch.equal(ours[~seen], logits[~seen])  # unseen tokens: unchanged


def test_repetition_penalty_formula():
    logits = torch.tensor([[2.0, -2.0, 0.0, 4.0]])
    seen = torch.tensor([[True, True, True, False]])
    assert RepetitionPenalty(2.0)(logits, seen).tolist() == [[1.0, -4.0, 0.0, 4.0]]


# ---- temperature ---------------------------------------------------------------------------------


def test_temperature_matches_hf_up_to_the_subtracted_max():
    transformers = pytest.importorskip("transformers")
    logits = random_logits()
    for t in (0.3, 0.7, 2.0):
        ours = Temperature(t)(logits, None)
        theirs = transformers.TemperatureLogitsWarper(t)(None, logits.clone())
        torch.testing.assert_close(ours, theirs - theirs.amax(dim=-1, keepdim=True))
        torch.testing.assert_close(torch.softmax(ours, -1), torch.softmax(theirs, -1))


def test_temperature_per_row_leaves_greedy_and_unit_rows_unchanged():
    logits = random_logits()
    ours = Temperature(torch.tensor([0.0, 1.0, 0.5, 2.0]))(logits, None)
    assert torch.equal(ours[:2], logits[:2])
    for row, t in ((2, 0.5), (3, 2.0)):
        assert torch.equal(ours[row:row + 1], Temperature(t)(logits[row:row + 1], None))
    assert Temperature(0.0)(logits, None) is logits


def test_tiny_temperature_neither_overflows_nor_gives_nan():
    logits = torch.tensor([[3.0e38, -3.0e38, 1.0, 3.0e38 * 0.5], [1.0, 2.0, -INF, 0.0], [-INF, -INF, -INF, -INF]])
    out = Temperature(1e-300)(logits, None)
    assert not out.isnan().any()
    assert out[0].tolist() == [0.0, -INF, -INF, -INF]
    assert out[1].tolist() == [-INF, 0.0, -INF, -INF]
    assert out[2].tolist() == [-INF] * 4  # no finite logit: left as it is
    assert torch.softmax(out[:2], -1).argmax(-1).tolist() == [0, 1]


# ---- top-k ---------------------------------------------------------------------------------------


def test_top_k_keeps_exactly_k_per_row_ties_toward_the_lower_id():
    logits = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0, 0.0],
                           [5.0, 5.0, 5.0, 5.0, 5.0, 5.0],
                           [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
                           [1.0, -INF, 2.0, -INF, 0.5, 0.1],
                           [2.0, 1.0, 0.0, -1.0, 3.0, 4.0]])
    ks = [2, 3, 0, 5, 100]
    out = TopK(torch.tensor(ks))(logits, None)
    assert finite_count(out) == [2, 3, 6, 4, 6]
    for row, k in enumerate(ks):
        assert kept_ids(out[row]) == reference_top_k(logits[row].tolist(), k) & kept_ids(logits[row])
        kept = out[row] != -INF
        assert torch.equal(out[row][kept], logits[row][kept])  # kept logits are untouched
    assert kept_ids(out[0]) == {1, 2}
    assert kept_ids(out[1]) == {0, 1, 2}


def test_top_k_matches_hf_without_ties():
    transformers = pytest.importorskip("transformers")
    logits = random_logits(vocab=200)
    for k in (1, 5, 50):
        assert torch.equal(TopK(k)(logits, None), transformers.TopKLogitsWarper(k)(None, logits.clone()))


def test_top_k_against_the_reference_on_random_rows():
    logits = random_logits(batch=6, vocab=40).round()  # rounding makes ties
    ks = [1, 2, 7, 13, 0, 40]
    out = TopK(torch.tensor(ks))(logits, None)
    for row, k in enumerate(ks):
        assert kept_ids(out[row]) == reference_top_k(logits[row].tolist(), k)


# ---- top-p ---------------------------------------------------------------------------------------


def test_top_p_keeps_the_minimal_nucleus_per_row():
    logits = random_logits(batch=6, vocab=40, seed=3).round()  # ties
    ps = [0.05, 0.3, 0.5, 0.9, 0.999, 1.0]
    out = TopP(torch.tensor(ps))(logits, None)
    for row, p in enumerate(ps):
        assert kept_ids(out[row]) == reference_top_p(logits[row].tolist(), p), (row, p)
        kept = out[row] != -INF
        assert torch.equal(out[row][kept], logits[row][kept])
    assert finite_count(out)[0] >= 1 and finite_count(out)[-1] == 40


def test_top_p_ties_and_at_least_one_token():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.3], [0.2, 0.4, 0.4], [0.9, 0.05, 0.05]]))
    out = TopP(torch.tensor([0.6, 0.5, 1e-9]))(logits, None)
    assert [kept_ids(row) for row in out] == [{0, 1}, {1, 2}, {0}]
    assert kept_ids(TopP(1e-9)(torch.zeros(1, 5), None)[0]) == {0}  # all tied: the lowest id
    # The nucleus stops at the token that reaches p exactly (these probabilities are exact in binary).
    assert kept_ids(TopP(0.5)(torch.zeros(1, 4), None)[0]) == {0, 1}
    assert kept_ids(TopP(0.5)(torch.tensor([[0.0, 0.0, -INF]]), None)[0]) == {0}
    everything = torch.full((1, 1000), -2.0)
    everything[0, 0] = 30.0  # the tail's probabilities are lost in the cumulative sum's rounding
    assert torch.equal(TopP(1.0)(everything, None), everything)
    assert torch.equal(TopP(torch.tensor([1.0]))(everything, None), everything)


def test_top_p_matches_hf_without_ties():
    transformers = pytest.importorskip("transformers")
    logits = random_logits(vocab=200, seed=5)
    for p in (0.1, 0.5, 0.8, 0.95):
        assert torch.equal(TopP(p)(logits, None), transformers.TopPLogitsWarper(p)(None, logits.clone()))


# ---- allowed tokens, guidance, lists -------------------------------------------------------------


def test_allowed_tokens_for_all_rows_and_per_row():
    logits = random_logits(batch=2, vocab=6)
    shared = AllowedTokens(torch.tensor([False, True, True, False, False, True]))(logits, None)
    assert [kept_ids(row) for row in shared] == [{1, 2, 5}] * 2
    per_row = AllowedTokens(torch.tensor([[True] * 3 + [False] * 3, [False] * 3 + [True] * 3]))(logits, None)
    assert [kept_ids(row) for row in per_row] == [{0, 1, 2}, {3, 4, 5}]
    assert torch.equal(per_row[0, :3], logits[0, :3])


def test_guidance_at_scale_one_is_the_conditional_exactly():
    conditional, unconditional = random_logits(seed=1), random_logits(seed=2)
    assert torch.equal(guided(conditional, unconditional, 1.0), conditional)
    out = guided(conditional, unconditional, torch.tensor([1.0, 3.0, 0.0, 1.0]))
    assert torch.equal(out[[0, 3]], conditional[[0, 3]])
    torch.testing.assert_close(out[1], unconditional[1] + 3.0 * (conditional[1] - unconditional[1]))
    torch.testing.assert_close(out[2], unconditional[2])


def test_guidance_keeps_masked_tokens_masked_and_never_gives_nan():
    conditional = torch.tensor([[-INF, -INF, 1.0, 2.0, 0.5]])
    unconditional = torch.tensor([[-INF, 0.0, -INF, 1.0, 0.0]])
    for scale in (0.0, 1.0, 3.0, -2.0):
        out = guided(conditional, unconditional, scale)
        assert not out.isnan().any()
        assert out[0, :2].tolist() == [-INF, -INF]  # masked in both, or by the condition
        assert out[0, 2].item() == 1.0  # masked in the unconditional row only: the conditional logit
        assert out[0, 3].item() == pytest.approx(1.0 + scale * 1.0)


def test_logits_processor_list_applies_in_order():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    allowed = AllowedTokens(torch.tensor([True, False, True, True]))
    assert kept_ids(LogitsProcessorList([allowed, TopK(1)])(logits, None)[0]) == {2}
    assert kept_ids(LogitsProcessorList([TopK(1), allowed])(logits, None)[0]) == set()
    assert torch.equal(LogitsProcessorList()(logits, None), logits)


def test_processors_for_leaves_out_what_no_row_uses_and_keeps_hf_order():
    assert processors_for([Sampling(), Sampling(temperature=1.0)], "cpu") == []
    types = [type(p) for p in processors_for([Sampling(temperature=0.5, top_p=0.9),
                                              Sampling(top_k=3, repetition_penalty=1.2)], "cpu")]
    assert types == [RepetitionPenalty, Temperature, TopK, TopP]
    assert [type(p) for p in processors_for([Sampling(top_k=3)], "cpu")] == [TopK]


# ---- the token chooser ---------------------------------------------------------------------------


def test_greedy_rows_take_the_argmax_ties_to_the_lowest_id():
    logits = random_logits()
    logits[0, 7] = logits[0, 9] = logits[0].max() + 1
    chosen = TokenChooser([Sampling()] * 4, "cpu")(logits)
    assert chosen.dtype == torch.long and chosen.tolist() == logits.argmax(-1).tolist()
    assert chosen[0].item() == 7


def draws(samplings, steps=30, vocab=20, seed=0):
    """The tokens ``samplings``' rows choose over ``steps`` steps of random logits, ``[steps, B]``."""
    chooser = TokenChooser(samplings, "cpu")
    return torch.stack([chooser(random_logits(len(samplings), vocab, seed=seed + step, scale=1.0))
                        for step in range(steps)])


def test_same_seed_same_draws_other_seed_other_draws():
    samplings = [Sampling(temperature=1.0, seed=5), Sampling(temperature=0.7, seed=6)]
    assert torch.equal(draws(samplings), draws(samplings))
    other = [Sampling(temperature=1.0, seed=50), Sampling(temperature=0.7, seed=60)]
    assert not torch.equal(draws(samplings), draws(other))


def test_batched_equals_one_by_one():
    """A whole decoding step (penalty, temperature, top-k, top-p, choice) gives each row what it gets alone."""
    samplings = [Sampling(),
                 Sampling(temperature=0.8, seed=1),
                 Sampling(temperature=1.3, top_k=5, seed=2),
                 Sampling(temperature=1.0, top_p=0.7, repetition_penalty=1.3, seed=3),
                 Sampling(temperature=0.5, top_k=8, top_p=0.9, repetition_penalty=0.8, seed=1),
                 Sampling(top_k=2, repetition_penalty=2.0)]
    batch, vocab, steps = len(samplings), 64, 25

    def run(rows):
        processors, chooser = processors_for([samplings[r] for r in rows], "cpu"), TokenChooser(
            [samplings[r] for r in rows], "cpu")
        seen = torch.zeros(len(rows), vocab, dtype=torch.bool)
        seen[:, :3] = True  # a prompt
        tokens, processed = [], []
        for step in range(steps):
            logits = random_logits(batch, vocab, seed=100 + step, scale=2.0)[rows]
            logits = processors(logits, seen)
            chosen = chooser(logits)
            seen[torch.arange(len(rows)), chosen] = True
            tokens.append(chosen)
            processed.append(logits)
        return torch.stack(tokens, 1), torch.stack(processed, 1)

    tokens, processed = run(list(range(batch)))
    for row in range(batch):
        alone_tokens, alone_processed = run([row])
        assert torch.equal(alone_tokens[0], tokens[row]), row
        assert torch.equal(alone_processed[0], processed[row]), row
    assert len(set(tokens[1].tolist())) > 3  # the sampling rows do sample
    assert not torch.equal(tokens[1], tokens[4])  # same seed, other settings: other draws


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_draws_follow_the_distribution(temperature):
    probabilities = torch.tensor([0.2, 0.3, 0.5])
    logits = torch.log(probabilities)[None]
    sampling = Sampling(temperature=temperature, seed=11)
    processors, chooser = processors_for([sampling], "cpu"), TokenChooser([sampling], "cpu")
    steps = 3000
    counts = torch.bincount(torch.cat([chooser(processors(logits, torch.zeros(1, 3, dtype=torch.bool)))
                                       for _ in range(steps)]), minlength=3)
    expected = probabilities ** (1 / temperature)
    expected = expected / expected.sum()
    # 4 standard deviations of a frequency over 3000 draws (at most 0.009)
    torch.testing.assert_close(counts / steps, expected, atol=0.036, rtol=0)


def test_a_row_without_a_finite_logit_gets_token_zero_and_no_error():
    logits = torch.full((2, 50), -INF)
    logits[1, 3] = 0.0
    samplings = [Sampling(temperature=1.0, seed=2), Sampling(temperature=1.0, seed=3)]  # seed 2 would draw 41
    assert TokenChooser(samplings, "cpu")(logits).tolist() == [0, 3]
    assert TokenChooser([Sampling()] * 2, "cpu")(logits).tolist() == [0, 3]


def test_the_chooser_checks_the_rows():
    with pytest.raises(GenerationError, match="3 rows"):
        TokenChooser([Sampling()] * 2, "cpu")(torch.zeros(3, 4))
    with pytest.raises(GenerationError, match="samplings"):
        TokenChooser([], "cpu")
    with pytest.raises(GenerationError, match=r"samplings\[1\]"):
        processors_for([Sampling(), {"temperature": 1.0}], "cpu")


# ---- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("temperature", math.nan), ("temperature", -0.1), ("temperature", math.inf), ("temperature", True),
    ("temperature", "1"), ("temperature", None),
    ("top_k", -1), ("top_k", 1.5), ("top_k", True), ("top_k", "3"),
    ("top_p", 0.0), ("top_p", 1.5), ("top_p", math.nan), ("top_p", False),
    ("repetition_penalty", 0.0), ("repetition_penalty", -1.0), ("repetition_penalty", math.inf),
    ("repetition_penalty", True),
    ("seed", -1), ("seed", 2**63), ("seed", 1.0), ("seed", True),
])
def test_bad_sampling_settings_name_the_field(field, value):
    with pytest.raises(GenerationError, match=f"^{field}={value!r}: must be") as raised:
        Sampling(**{field: value})
    assert isinstance(raised.value, MotError) and isinstance(raised.value, ValueError)


def test_good_sampling_settings():
    Sampling(temperature=0, top_k=0, top_p=1, repetition_penalty=1, seed=2**63 - 1)
    assert Sampling().greedy and not Sampling(temperature=1e-9).greedy
    assert Sampling(temperature=0.7, seed=3) == Sampling(temperature=0.7, seed=3)  # frozen, comparable


def test_bad_processor_arguments_name_them():
    with pytest.raises(GenerationError, match="^top_k=-1"):
        TopK(-1)
    with pytest.raises(GenerationError, match="^top_k: a tensor"):
        TopK(torch.tensor([1.5]))
    with pytest.raises(GenerationError, match="^top_p=0"):
        TopP(0)
    with pytest.raises(GenerationError, match="^temperature=nan"):
        Temperature(math.nan)
    with pytest.raises(GenerationError, match="^repetition_penalty: a tensor"):
        RepetitionPenalty(torch.ones(2, 2))
    with pytest.raises(GenerationError, match="^scale=nan"):
        guided(torch.zeros(1, 3), torch.zeros(1, 3), math.nan)
    with pytest.raises(GenerationError, match="^unconditional"):
        guided(torch.zeros(1, 3), torch.zeros(2, 3), 1.0)
    with pytest.raises(GenerationError, match="^allowed"):
        AllowedTokens(torch.ones(4))
    with pytest.raises(GenerationError, match="^allowed"):
        AllowedTokens(torch.ones(4, dtype=torch.bool))(torch.zeros(1, 5), None)
    with pytest.raises(GenerationError, match="^temperature: has 3 rows"):
        Temperature(torch.ones(3))(torch.zeros(2, 4), None)
    with pytest.raises(GenerationError, match="^seen"):
        RepetitionPenalty(1.2)(torch.zeros(2, 4), torch.zeros(2, 3, dtype=torch.bool))


# ---- no host sync --------------------------------------------------------------------------------


def test_processing_and_choosing_never_read_the_device():
    samplings = [Sampling(), Sampling(temperature=0.7, top_k=5, seed=1),
                 Sampling(temperature=1.2, top_p=0.8, repetition_penalty=1.3, seed=2)]
    processors = processors_for(samplings, "cpu")
    processors.insert(0, AllowedTokens(torch.arange(30) < 25))
    chooser = TokenChooser(samplings, "cpu")
    conditional, unconditional, seen = random_logits(3, 30, seed=1), random_logits(3, 30, seed=2), random_seen(3, 30)
    recorder = RecordOps()
    with recorder:
        logits = guided(conditional, unconditional, torch.tensor([1.0, 3.0, 0.5]))
        for _ in range(3):
            chosen = chooser(processors(logits, seen))
            seen = seen.scatter(1, chosen[:, None], True)
    assert {"multinomial", "sort"} <= set(recorder.names)
    assert not SYNCING_OPS & set(recorder.names)
    assert not recorder.bool_indexing
