"""Continuous batching: requests that join a batch between steps, or leave it early, get exactly the
tokens they get alone; the KV cache joins rows of different lengths and drops rows."""

import pytest
import torch

from mot.generate.batching import DecodingBatch
from mot.generate.decoding import Decoder, Request
from mot.generate.logits import GenerationError, Sampling
from mot.model.kv_cache import KVCache

from tests.generate.test_decoding import LAYOUT, RULES, model_for, requests


def run_alone(decoder, request):
    return decoder.generate([request])[0]


@pytest.mark.parametrize("architecture", ["mot", "hybrid-token-choice", "leave-one-out"])
def test_requests_joining_between_steps_get_what_they_get_alone(architecture):
    decoder = Decoder(model_for(architecture), LAYOUT, RULES)
    mixed = [Request(r.prompt, r.mode, r.max_new_tokens, Sampling(temperature=t, seed=i, top_k=k), r.guidance)
             for i, (r, t, k) in enumerate(zip(requests(), [0.0, 1.0, 0.7, 0.0, 1.2], [0, 5, 0, 0, 3]))]
    batch = DecodingBatch(decoder)
    joins = {0: [0, 3], 2: [1], 3: [2, 4]}  # step -> the requests that join before it
    live, step = {}, 0
    while step in joins or batch:
        for index in joins.get(step, []):
            live[index] = batch.join([mixed[index]])[0]
        batch.step()
        step += 1
    for index, request in enumerate(mixed):
        alone = run_alone(decoder, request)
        assert (live[index].tokens, live[index].finished) == (alone.tokens, alone.finished)


def test_a_request_that_leaves_frees_its_rows_and_the_others_go_on():
    decoder = Decoder(model_for("mot"), LAYOUT, RULES)
    first, second = requests(temperature=1.0, seed=3)[1:3]
    batch = DecodingBatch(decoder)
    live_first, live_second = batch.join([first, second])
    assert len(batch) == 2 and batch.cache.keys[0].shape[0] == 3  # the guided request has two rows
    batch.step()
    batch.leave([live_second])
    assert len(batch) == 1 and batch.cache.keys[0].shape[0] == 1 and live_second.ended
    assert batch.cache.length == live_first.length  # the columns only the leaver needed are gone
    while batch:
        batch.step()
    assert live_first.tokens == run_alone(decoder, first).tokens


def test_a_bad_request_joins_nothing():
    decoder = Decoder(model_for("mot"), LAYOUT, RULES)
    batch = DecodingBatch(decoder)
    batch.join(requests()[:1])
    with pytest.raises(GenerationError, match=r"requests\[1\]\.max_new_tokens=0"):
        batch.join([requests()[1], Request(requests()[1].prompt, max_new_tokens=0)])
    assert len(batch) == 1 and batch.cache.keys[0].shape[0] == 1


def test_each_request_has_the_whole_context():
    """The context limit is each request's own: a short prompt beside a long one is not cut short."""
    decoder = Decoder(model_for("mot"), LAYOUT, RULES)
    limit = decoder.model.config.max_seq_len
    bos, text = LAYOUT.special("<bos>"), LAYOUT.id_range("text")[0]
    long = Request([bos] + [text + 1] * (limit - 4), mode="text", max_new_tokens=50)
    short = Request([bos, text + 2], mode="text", max_new_tokens=6)
    together = decoder.generate([long, short])
    assert together == [run_alone(decoder, long), run_alone(decoder, short)]
    assert len(together[0].tokens) + together[0].finished <= 3  # positions limit-4 .. limit-1


def test_the_cache_joins_rows_of_different_lengths_and_selects_rows():
    def cache(rows, length, fill):
        c = KVCache(2)
        for layer in range(2):
            c.keys[layer] = torch.full((rows, 1, length, 2), float(fill))
            c.values[layer] = torch.full((rows, 1, length, 2), -float(fill))
        c.document_ids = torch.full((rows, length), 1)
        c.span_ids = torch.full((rows, length), 2)
        c.length = length
        return c

    joined = KVCache.concatenate([cache(1, 3, 5), cache(2, 1, 7)], pad_document=0)
    assert joined.length == 3 and joined.keys[1].shape == (3, 1, 3, 2)
    assert joined.keys[1][1:, 0, :, 0].tolist() == [[0, 0, 7], [0, 0, 7]]  # right-aligned
    assert joined.document_ids.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 1]]
    assert joined.span_ids.tolist() == [[2, 2, 2], [0, 0, 2], [0, 0, 2]]
    kept = joined.select(torch.tensor([2, 1]), length=1)
    assert kept.length == 1 and kept.values[0][:, 0, :, 0].tolist() == [[-7], [-7]]
    assert kept.document_ids.tolist() == [[1], [1]]
    with pytest.raises(ValueError, match="length=4"):
        joined.select(torch.tensor([0]), length=4)
