"""A Transfusion run through the server: images denoised several requests at a time, each the image
the pipeline draws for it alone; captions over the image's latents; text completions."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mot.generate.logits import Sampling
from mot.generate.transfusion import ImageSampling
from mot.serve.served_model import ServedModel, png
from mot.serve.server import BackgroundServer


@pytest.fixture(scope="module")
def transfusion(transfusion_run):
    return ServedModel.from_run(transfusion_run, log=lambda _: None)


def test_batched_denoising_draws_each_request_as_alone(transfusion):
    pipeline = transfusion.pipeline
    prompts, seeds = ["a red circle", "a blue square", "a green star"], [4, 11, 4]
    sampling = ImageSampling(steps=3, cfg_scale=2.0)
    batched = pipeline.text_to_image(prompts, sampling, seeds=seeds)
    for prompt, seed, image in zip(prompts, seeds, batched):
        alone = pipeline.text_to_image([prompt], ImageSampling(steps=3, cfg_scale=2.0, seed=seed))[0]
        assert (image == alone).all()


def test_transfusion_through_the_server(transfusion):
    pipeline = transfusion.pipeline
    assert transfusion.tasks == ("completions", "images", "captions")
    with BackgroundServer(transfusion) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        bodies = [dict(prompt=p, seed=s, steps=3, guidance=g) for p, s, g in
                  [("a red circle", 1, 2.0), ("a blue square", 2, 2.0), ("a pink star", 3, 1.0)]]
        with ThreadPoolExecutor(3) as pool:
            responses = list(pool.map(lambda body: client.post("/v1/images", json=body), bodies))
        for body, response in zip(bodies, responses):
            assert response.status_code == 200, response.text
            alone = pipeline.text_to_image([body["prompt"]], ImageSampling(steps=3, cfg_scale=body["guidance"],
                                                                           seed=body["seed"]))[0]
            assert response.content == png(alone)
        caption = client.post("/v1/captions", content=responses[0].content, params=dict(max_tokens=6))
        image = pipeline.text_to_image(["a red circle"], ImageSampling(steps=3, cfg_scale=2.0, seed=1))
        assert caption.json()["text"] == pipeline.image_to_text(image, max_new_tokens=6)[0]
        text = client.post("/v1/completions", json=dict(prompt="a red", max_tokens=6, seed=5)).json()
        assert text["choices"][0]["text"] == pipeline.complete(["a red"], 6, Sampling(temperature=1.0, seed=5))[0]
        bad = client.post("/v1/images", json=dict(prompt="a red circle", steps=5000))
        assert bad.status_code == 400 and "steps=5000" in bad.json()["error"]["message"]
