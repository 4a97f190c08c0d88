"""The server answers as the Python API does (same seed, same text, same PNG bytes, same caption),
alone, streamed and under concurrent mixed load; /health and /metrics tell what happened."""

import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from mot.generate.logits import Sampling
from mot.serve.limits import ServeLimits
from mot.serve.served_model import png
from mot.serve.server import BackgroundServer


@pytest.fixture(scope="module")
def server(served):
    with BackgroundServer(served, ServeLimits(max_batch=8, max_new_tokens=128)) as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def completion(client, prompt, seed, max_tokens=12, **more):
    response = client.post("/v1/completions", json=dict(prompt=prompt, max_tokens=max_tokens, seed=seed,
                                                        temperature=1.0, **more))
    assert response.status_code == 200, response.text
    return response.json()


def test_health_names_the_model_and_its_tasks(client, served):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == served.name and health["setting"] == "chameleon"
    assert health["tasks"] == ["completions", "images", "captions"] and health["auth"] is False
    assert client.get("/v1/models").json()["data"][0]["id"] == served.name


def test_a_completion_is_the_python_apis(client, served):
    body = completion(client, "a red circle", seed=5, top_k=20)
    expected = served.pipeline.complete(["a red circle"], 12, Sampling(temperature=1.0, seed=5, top_k=20))[0]
    choice = body["choices"][0]
    assert body["object"] == "text_completion" and choice["text"] == expected
    assert choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["prompt_tokens"] == len(served.completion("a red circle", 12, Sampling()).prompt)


def test_an_image_is_the_python_apis_png(client, served):
    response = client.post("/v1/images", json=dict(prompt="a blue square", seed=9, temperature=1.0, guidance=2.0))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    expected = served.pipeline.text_to_image(["a blue square"], Sampling(temperature=1.0, seed=9), guidance=2.0)
    assert response.content == png(expected[0])


def test_a_caption_is_the_python_apis(client, served):
    image = served.pipeline.text_to_image(["a green star"], Sampling(temperature=1.0, seed=1))
    response = client.post("/v1/captions", content=png(image[0]), params=dict(max_tokens=10))
    assert response.status_code == 200
    assert response.json()["text"] == served.pipeline.image_to_text(image, max_new_tokens=10)[0]


def test_a_stream_carries_the_same_text(client):
    expected = completion(client, "two shapes", seed=2, max_tokens=16)["choices"][0]
    with client.stream("POST", "/v1/completions", json=dict(prompt="two shapes", max_tokens=16, seed=2,
                                                           temperature=1.0, stream=True)) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    import json
    chunks = [json.loads(event)["choices"][0] for event in events[:-1]]
    assert "".join(c["text"] for c in chunks) == expected["text"]
    assert chunks[-1]["finish_reason"] == expected["finish_reason"]
    assert all(c["finish_reason"] is None for c in chunks[:-1])


def test_concurrent_mixed_requests_give_the_sequential_outputs(client, served):
    image = png(served.pipeline.text_to_image(["a yellow triangle"], Sampling(temperature=1.0, seed=4))[0])
    work = ([("completions", dict(prompt=f"a {c} circle", max_tokens=10 + i, seed=i, temperature=1.0))
             for i, c in enumerate(["red", "blue", "green", "pink"])]
            + [("images", dict(prompt=f"a {c} square", seed=i, temperature=1.0, guidance=1.5 + i))
               for i, c in enumerate(["red", "purple", "white"])]
            + [("captions", dict(max_tokens=8, seed=3, temperature=0.8))])

    def send(item):
        task, body = item
        if task == "captions":
            response = client.post("/v1/captions", content=image, params=body)
        else:
            response = client.post(f"/v1/{task}", json=body)
        assert response.status_code == 200, response.text
        return response.content if task == "images" else response.json()

    def text_of(answer):
        return answer if isinstance(answer, bytes) else answer.get("text") or answer["choices"][0]["text"]

    sequential = [text_of(send(item)) for item in work]
    with ThreadPoolExecutor(8) as pool:
        concurrent = [text_of(answer) for answer in pool.map(send, work)]
    assert concurrent == sequential
    metrics = client.get("/metrics").text
    assert 'mot_requests_total{task="images",status="ok"}' in metrics
    assert 'mot_generated_tokens_total{modality="image"}' in metrics and "mot_queue_length 0" in metrics


def test_speech_both_ways_through_the_server(speech_model):
    served, pipeline = speech_model
    with BackgroundServer(served) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.post("/v1/speech", json=dict(prompt="hello there", seed=3, max_units=6))
        assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
        units = pipeline.text_to_speech(["hello there"], Sampling(temperature=1.0, seed=3), max_units=6)[0]
        from mot.serve.served_model import wav
        assert response.content == wav(pipeline.speech_audio(units, seed=3))
        as_units = client.post("/v1/speech", json=dict(prompt="hello there", seed=3, max_units=6, format="units"))
        assert as_units.json()["units"] == units.tolist() and len(units) <= 6
        big_seed = client.post("/v1/speech", json=dict(prompt="hello there", seed=2**40, max_units=3))
        assert big_seed.status_code == 200  # numpy's legacy seeding stops at 2**32; ours does not
        heard = client.post("/v1/transcriptions", content=response.content, params=dict(max_tokens=4))
        assert heard.status_code == 200
        from mot.data.sources.speech import decode_wav
        audio, _ = decode_wav(io.BytesIO(response.content))
        expected = pipeline.speech_to_text([pipeline.audio_to_units(audio)], max_new_tokens=4)[0]
        assert heard.json()["text"] == expected


@pytest.fixture(scope="module")
def speech_model(served):
    """A random Chameleon+Speech model with a tone unit tokenizer and vocoder, beside the run's text and VQ."""
    from mot.generate.chameleon import ChameleonPipeline
    from mot.model import build_model
    from mot.serve.served_model import ServedModel
    from mot.tokenizers.vocab import VocabLayout
    from tests.helpers import tiny_config, tone_speech

    units, vocoder = tone_speech(num_units=12, steps=5)
    base = served.pipeline
    layout = VocabLayout({**base.layout.modality_sizes, "speech": 12})
    model = build_model(tiny_config(vocab_size=layout.vocab_size, modalities=layout.modalities)).eval()
    pipeline = ChameleonPipeline(model, layout, base.text, base.vq, speech_max_units=6, speech_units=units,
                                 vocoder=vocoder)
    return ServedModel(pipeline, "speech-test"), pipeline


def test_the_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script" in page.text and "http://" not in page.text and "https://" not in page.text  # no CDN


def test_tokens_per_second_are_counted_by_modality(server, client):
    completion(client, "a circle", seed=1)
    rates = server.app.state.metrics.tokens_per_second()
    assert rates["text"] > 0 and set(rates) == {"text", "image", "speech"}
    assert np.isfinite(list(rates.values())).all()
