"""The decoding engine: cached decoding equals the uncached reference token for token, batched equals
one by one, every span is well formed, one host read per generated token, bad requests are named."""

import re

import pytest
import torch

from mot.generate.decoding import Decoder, Request
from mot.generate.logits import GenerationError, Sampling
from mot.generate.modality_state import SpanRules
from mot.generate.reference_decoding import reference_generate
from mot.model import build_model
from mot.tokenizers.vocab import VocabLayout

from tests.helpers import SYNCING_OPS, RecordOps, tiny_config

LAYOUT = VocabLayout({"text": 24, "image": 16, "speech": 12})
RULES = SpanRules(image_tokens=4, speech_max_units=5)
BOS, EOS = LAYOUT.special("<bos>"), LAYOUT.special("<eos>")
BOI, EOI = LAYOUT.markers("image")
BOS_SPEECH, EOS_SPEECH = LAYOUT.markers("speech")
TEXT, IMAGE, SPEECH = (LAYOUT.id_range(m)[0] for m in ("text", "image", "speech"))

ARCHITECTURES = {
    "dense": dict(towers={"text": "shared", "image": "shared", "speech": "shared"}),
    "mot": dict(),
    "leave-one-out": dict(towers={"text": "text_speech", "image": "image", "speech": "text_speech"}),
    "hybrid-token-choice": dict(moe={"towers": ["text"], "routing": "token_choice", "num_experts": 4}),
    "moe4x-expert-choice": dict(towers={"text": "shared", "image": "shared", "speech": "shared"},
                                moe={"towers": ["shared"], "routing": "expert_choice", "num_experts": 4}),
}


def model_for(architecture: str, seed: int = 0):
    torch.manual_seed(seed)
    config = tiny_config(vocab_size=LAYOUT.vocab_size, modalities=["text", "image", "speech"],
                         **ARCHITECTURES[architecture])
    return build_model(config).eval()


def requests(**sampling):
    """Prompts that cross modality boundaries: text -> image -> text, text -> speech -> text."""
    s = Sampling(**sampling)
    return [Request([BOS, TEXT + 3, TEXT + 5, BOI, IMAGE + 1], mode="free", max_new_tokens=12, sampling=s),
            Request([BOS, TEXT + 7, BOS_SPEECH], mode="free", max_new_tokens=14, sampling=s),
            Request([BOS, TEXT + 1, TEXT + 2, TEXT + 4, BOI], mode="image", max_new_tokens=9, sampling=s, guidance=2.7),
            Request([BOS, BOI, *range(IMAGE, IMAGE + 4), EOI], mode="text", max_new_tokens=6, sampling=s),
            Request([BOS, TEXT + 9, BOS_SPEECH, SPEECH + 2], mode="speech", max_new_tokens=8, sampling=s)]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_cached_greedy_decoding_equals_the_uncached_reference(architecture):
    model = model_for(architecture)
    cached = Decoder(model, LAYOUT, RULES).generate(requests())
    assert cached == reference_generate(model, LAYOUT, requests(), RULES)
    free_image, free_speech = cached[0].tokens, cached[1].tokens
    # the image got its 3 missing codes and closed, then text went on
    assert all(IMAGE <= t < IMAGE + 16 for t in free_image[:3]) and free_image[3] == EOI
    assert EOS_SPEECH in free_speech  # the speech span closed (at the latest after 5 units), then text


@pytest.mark.parametrize("architecture", ["mot", "hybrid-token-choice"])
def test_sampled_decoding_equals_the_reference_with_the_same_seeds(architecture):
    model = model_for(architecture)
    settings = dict(temperature=0.9, top_k=10, top_p=0.9, repetition_penalty=1.3, seed=7)
    assert (Decoder(model, LAYOUT, RULES).generate(requests(**settings))
            == reference_generate(model, LAYOUT, requests(**settings), RULES))


def test_batched_generation_equals_one_by_one():
    model = model_for("mot")
    mixed = [Request(r.prompt, r.mode, r.max_new_tokens, Sampling(temperature=t, seed=i), r.guidance)
             for i, (r, t) in enumerate(zip(requests(), [0.0, 1.0, 0.7, 0.0, 1.2]))]
    decoder = Decoder(model, LAYOUT, RULES)
    assert decoder.generate(mixed) == [decoder.generate([r])[0] for r in mixed]
    assert decoder.generate(mixed) == decoder.generate(mixed)  # same seeds, same output


def spans(tokens):
    """``(modality, ids)`` of every image and speech span in ``tokens``, and the text ids outside them."""
    found, text, current = [], [], None
    for token in tokens:
        if token in (BOI, BOS_SPEECH):
            current = ("image" if token == BOI else "speech", [])
        elif token in (EOI, EOS_SPEECH):
            found.append(current)
            current = None
        elif current is not None:
            current[1].append(token)
        else:
            text.append(token)
    return found, text, current


def test_free_sampling_keeps_every_span_well_formed():
    model = model_for("mot", seed=3)
    decoder = Decoder(model, LAYOUT, RULES)
    batch = [Request([BOS, TEXT + i], mode="free", max_new_tokens=60, sampling=Sampling(temperature=1.5, seed=i))
             for i in range(6)]
    seen_spans = 0
    for generation in decoder.generate(batch):
        found, text, unfinished = spans(generation.tokens)
        for modality, ids in found:
            seen_spans += 1
            if modality == "image":
                assert len(ids) == RULES.image_tokens and all(IMAGE <= t < IMAGE + 16 for t in ids)
            else:
                assert 1 <= len(ids) <= RULES.speech_max_units and all(SPEECH <= t < SPEECH + 12 for t in ids)
        assert all(TEXT <= t < TEXT + 24 for t in text)
        assert generation.finished == (unfinished is None and len(generation.tokens) < 60)
    assert seen_spans > 0  # at temperature 1.5 the random model opens spans


def test_one_host_read_per_generated_token(monkeypatch):
    import mot.generate.batching as batching

    model = model_for("hybrid-token-choice")
    reads, recorder = [], RecordOps()
    original_fetch, original_plan = batching.fetch, batching.build_routing_plan

    def counted(tensor):
        reads.append(tensor.shape)
        return original_fetch(tensor)

    def plan_on_the_host(*args):  # built from host ids by design; recorded elsewhere (test_no_host_sync)
        recorder.__exit__(None, None, None)
        try:
            return original_plan(*args)
        finally:
            recorder.__enter__()

    monkeypatch.setattr(batching, "fetch", counted)
    monkeypatch.setattr(batching, "build_routing_plan", plan_on_the_host)
    decoder = Decoder(model, LAYOUT, RULES)
    batch = [Request([BOS, TEXT + 1, BOI], mode="image", max_new_tokens=20, guidance=2.0),
             Request([BOS, TEXT + 2], mode="text", max_new_tokens=6)]
    with recorder:
        generations = decoder.generate(batch)
    # each request's steps: its tokens, and the <eos> that ends a text (an image's <eoi> is a token)
    lengths = [len(g.tokens) + (g.finished and r.mode == "text") for g, r in zip(generations, batch)]
    # one read per step, of the requests still in the batch (a request that ended has left it)
    assert [shape[0] for shape in reads] == [sum(n > step for n in lengths) for step in range(max(lengths))]
    assert not SYNCING_OPS & set(recorder.names) and not recorder.bool_indexing


@pytest.mark.parametrize("request_, message", [
    (Request([TEXT + 1]), "must start with <bos>"),
    (Request([BOS, LAYOUT.vocab_size]), f"not an id of the vocabulary [0, {LAYOUT.vocab_size})"),
    (Request([BOS] * 128), "max_seq_len=128"),
    (Request([BOS], max_new_tokens=0), "max_new_tokens=0"),
    (Request([BOS, BOI], mode="image", guidance=float("nan")), "guidance=nan"),
    (Request([BOS, BOI], mode="image", guidance=-1.0), "guidance=-1.0"),
    (Request([BOS, TEXT], mode="text", guidance=2.0), "classifier-free guidance is for image requests"),
    (Request([BOS, TEXT], mode="image"), "must end inside a image span"),
    (Request([BOS, TEXT], mode="poem"), "mode='poem'"),
])
def test_bad_requests_are_named(request_, message):
    with pytest.raises(GenerationError, match=re.escape(message)):
        Decoder(model_for("mot"), LAYOUT, RULES).generate([request_])


def test_a_mode_the_model_lacks_is_named():
    layout = VocabLayout({"text": 24, "image": 16})
    model = build_model(tiny_config(vocab_size=layout.vocab_size, modalities=["text", "image"]))
    text = layout.id_range("text")[0]
    with pytest.raises(GenerationError, match="this model has no speech modality"):
        Decoder(model, layout, RULES).generate([Request([BOS, text], mode="speech")])
