"""Generation with runs of the Chameleon settings: text -> image, image -> text, speech both ways,
free continuation; batched equals one by one; runs that cannot serve a request are named."""

import shutil

import numpy as np
import pytest

from mot.cli import main
from mot.data.sources.speech import read_wav
from mot.generate.chameleon import ChameleonPipeline
from mot.generate.logits import GenerationError, Sampling
from mot.generate.pipelines import pipeline_for_run
from mot.model import build_model
from mot.tokenizers.vocab import VocabLayout
from mot.train.trainer import Trainer

from tests.helpers import small_recipe, tiny_config, tone_speech


def quiet(_):
    pass


@pytest.fixture(scope="module")
def pipeline(chameleon_run):
    return ChameleonPipeline.from_run(chameleon_run, log=quiet)


def test_text_to_image_draws_one_whole_image_per_prompt(pipeline):
    size = pipeline.vq.config.image_size
    prompts = ["a red circle", "a blue square on a white background"]
    images = pipeline.text_to_image(prompts, Sampling(temperature=1.0, seed=4), guidance=3.0)
    assert images.shape == (2, size, size, 3) and images.dtype == np.uint8
    again = pipeline.text_to_image(prompts, Sampling(temperature=1.0, seed=4), guidance=3.0)
    alone = pipeline.text_to_image(prompts[1:], Sampling(temperature=1.0, seed=5), guidance=3.0)
    assert np.array_equal(images, again) and np.array_equal(images[1:], alone)  # request i samples with seed + i


def test_image_to_text_and_continuation(pipeline):
    images = pipeline.text_to_image(["a green star"], Sampling(temperature=1.0))
    captions = pipeline.image_to_text(np.concatenate([images, images]), max_new_tokens=5)
    assert len(captions) == 2 and captions[0] == captions[1] and all(isinstance(c, str) for c in captions)
    documents = pipeline.continue_document(["a small", "two shapes"], max_new_tokens=30,
                                           sampling=Sampling(temperature=1.5))
    for segments in documents:
        for kind, value in segments:
            assert kind in ("text", "image")
            if kind == "image":
                assert value.shape == (pipeline.vq.config.image_size,) * 2 + (3,)


def test_speech_both_ways(pipeline):
    layout = VocabLayout({**pipeline.layout.modality_sizes, "speech": 12})
    model = build_model(tiny_config(vocab_size=layout.vocab_size, modalities=layout.modalities)).eval()
    speaking = ChameleonPipeline(model, layout, pipeline.text, pipeline.vq, speech_max_units=6)
    units = speaking.text_to_speech(["hello there", "a red circle"], Sampling(temperature=1.0), max_units=6)
    assert all(1 <= len(u) <= 6 and u.min() >= 0 and u.max() < 12 for u in units)
    assert len(speaking.speech_to_text(units, max_new_tokens=4)) == 2
    with pytest.raises(GenerationError, match="this run has no speech"):
        pipeline.text_to_speech(["hello"])


def test_the_run_and_the_prompt_are_checked(pipeline, chameleon_run, transfusion_run, small_corpus, tmp_path):
    with pytest.raises(GenerationError, match="trained in the transfusion setting"):
        ChameleonPipeline.from_run(transfusion_run, log=quiet)
    with pytest.raises(GenerationError, match="a prompt must hold some text"):
        pipeline.text_to_image(["  "])
    assert isinstance(pipeline_for_run(chameleon_run, log=quiet), ChameleonPipeline)
    corpus = shutil.copytree(small_corpus, tmp_path / "corpus")
    Trainer(small_recipe(corpus, tmp_path, steps=1, checkpoint_every=1), log=quiet).train()
    shutil.rmtree(corpus / "tokenizers" / "image_vq")
    with pytest.raises(GenerationError, match="has no image_vq tokenizer"):
        ChameleonPipeline.from_run(tmp_path / "run", log=quiet)


def test_mot_generate_with_a_chameleon_run(chameleon_run, tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(["generate", str(chameleon_run), "--prompt", "a red circle", "--per-prompt", "2",
                 "--out", str(out), "--seed", "3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "sample-000.png", "sample-001.png"]
    assert main(["generate", str(chameleon_run), "--caption", str(out / "sample-000.png")]) == 0
    assert "sample-000.png:" in capsys.readouterr().out
    assert main(["generate", str(chameleon_run), "--prompt", "x", "--cfg-scale", "nan"]) == 2
    assert "cfg_scale=nan" in capsys.readouterr().err
    assert main(["generate", str(chameleon_run), "--prompt", "x", "--top-p", "0"]) == 2
    assert "top_p=0.0" in capsys.readouterr().err


def test_interleaved_prompt_documents_are_continued(pipeline, chameleon_run, transfusion_run, tmp_path, capsys):
    image = pipeline.text_to_image(["a red circle"])[0]
    document = [("text", "two shapes"), ("image", image), ("text", "and then")]
    ids = pipeline.document_ids(document)
    boi, eoi = pipeline.layout.markers("image")
    assert ids.count(boi) == 1 and ids[ids.index(eoi) - pipeline.vq.config.tokens_per_image - 1] == boi
    together = pipeline.continue_document([document, "a small"], max_new_tokens=20, sampling=Sampling(seed=3))
    assert together[0] == pipeline.continue_document([document], 20, Sampling(seed=3))[0]
    with pytest.raises(GenerationError, match=r"document\[0\]=.*a segment is"):
        pipeline.document_ids([("video", 1)])
    with pytest.raises(GenerationError, match="document is empty"):
        pipeline.document_ids([])
    out = tmp_path / "continued"
    assert main(["generate", str(chameleon_run), "--continue", "a large", "--max-new-tokens", "40",
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("a large -> ") == 1
    assert main(["generate", str(transfusion_run), "--continue", "a large"]) == 2
    assert "--continue, --speak and --transcribe need a run of the chameleon settings" in capsys.readouterr().err


def test_mot_generate_speaks_and_transcribes(pipeline, chameleon_run, tmp_path, capsys, monkeypatch):
    layout = VocabLayout({**pipeline.layout.modality_sizes, "speech": 12})
    model = build_model(tiny_config(vocab_size=layout.vocab_size, modalities=layout.modalities)).eval()
    units, vocoder = tone_speech(num_units=12, steps=10)
    speaking = ChameleonPipeline(model, layout, pipeline.text, pipeline.vq, speech_max_units=6, speech_units=units,
                                 vocoder=vocoder)
    monkeypatch.setattr("mot.generate.pipelines.pipeline_for_run", lambda run, log: speaking)
    out = tmp_path / "speech"
    assert main(["generate", "any-run", "--speak", "hello there", "--out", str(out)]) == 0
    written, wav = out / "speech-000-speech-0.npy", out / "speech-000-speech-0.wav"
    ids = np.load(written)
    assert f"hello there -> [speech: {wav}, " in capsys.readouterr().out and 1 <= len(ids) <= 6
    audio, rate = read_wav(wav)
    assert rate == 16_000 and len(audio) == 640 * len(ids)
    for heard in (written, wav):  # units, or a recording encoded by the unit tokenizer
        assert main(["generate", "any-run", "--transcribe", str(heard)]) == 0
        assert f"{heard}: " in capsys.readouterr().out
    np.save(tmp_path / "bad.npy", np.zeros((2, 2)))
    assert main(["generate", "any-run", "--transcribe", str(tmp_path / "bad.npy")]) == 2
    assert "must hold a non-empty 1-D array of integer unit ids" in capsys.readouterr().err
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really")
    assert main(["generate", "any-run", "--transcribe", str(tmp_path / "bad.wav")]) == 2
    assert "not a readable WAV file" in capsys.readouterr().err
    speaking.vocoder = None  # a corpus prepared before vocoders: units, and how to get audio
    assert main(["generate", "any-run", "--speak", "hello", "--out", str(tmp_path / "units")]) == 0
    assert "no speech vocoder" in capsys.readouterr().out and not list((tmp_path / "units").glob("*.wav"))
    with pytest.raises(GenerationError, match="run `mot prepare` with its config again"):
        speaking.speech_audio([1, 2])
    monkeypatch.undo()
    assert main(["generate", str(chameleon_run), "--speak", "hello"]) == 2
    assert "need a run of the chameleon_speech setting" in capsys.readouterr().err
