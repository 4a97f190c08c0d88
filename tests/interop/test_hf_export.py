"""mot models out as Hugging Face directories that ``transformers`` loads with equal logits, and back
with equal weights: a Llama-shaped model as a plain Llama, a MoT with the MoT class's copied code
(``trust_remote_code``, loaded in a Python that has not imported mot's class); and ``mot export
RUN --format hf``."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mot.cli import main
from mot.config import ConfigError
from mot.interop.hf_export import AUTO_MAP, export_hf, import_hf
from mot.io import CheckpointError
from mot.model import build_model
from mot.model.inputs import InputError
from mot.tokenizers.vocab import VocabError, VocabLayout

from tests.helpers import random_batch, tiny_config

transformers = pytest.importorskip("transformers")

#: 3 specials + 2 image markers + 60 + 32 = 97 ids, tiny_config's vocabulary
LAYOUT = VocabLayout({"text": 60, "image": 32})


def dense_llama_shaped():
    config = tiny_config(towers={"text": "shared", "image": "shared"}, norm_placement="pre", qk_norm=False,
                         n_kv_heads=2, rope_theta=500.0, init_std=0.1)
    return randomised_norms(build_model(config).eval())


def randomised_norms(model):
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.uniform_(0.5, 1.5)
    return model


def assert_same_weights(a, b):
    first, second = a.state_dict(), b.state_dict()
    assert list(first) == list(second)
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_a_llama_shaped_model_exports_as_a_plain_llama(tmp_path):
    model = dense_llama_shaped()
    export_hf(model, tmp_path / "hf")
    assert not (tmp_path / "hf" / "modeling_mot.py").exists()
    llama = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(llama) is transformers.LlamaForCausalLM
    tokens, modalities = random_batch(model.config, length=33)
    with torch.no_grad():
        ours = model(tokens, modalities).logits
        assert (llama(input_ids=tokens).logits - ours).abs().max().item() <= 1e-5
        back = import_hf(tmp_path / "hf")
        assert torch.equal(back(tokens, modalities).logits, ours)
    assert back.config == model.config  # the mot config travels in config.json, so the names come back
    assert_same_weights(back, model)


@pytest.mark.parametrize("untied", [["ffn", "attention", "norms"], ["ffn", "attention", "norms", "head"]])
def test_a_mot_exports_with_its_class_and_loads_back(tmp_path, untied):
    model = randomised_norms(build_model(tiny_config(n_kv_heads=2, untied=untied)).eval())  # post-norm, QK-norm
    export_hf(model, tmp_path / "hf", layout=LAYOUT)
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert saved["model_type"] == "mot" and saved["auto_map"] == AUTO_MAP
    assert saved["modality_sizes"] == {"text": 60, "image": 32}
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()  # mot's registered class
    tokens, modalities = random_batch(model.config, length=33)
    derived = torch.from_numpy(LAYOUT.modality_of(tokens.numpy()))
    with torch.no_grad():
        ours = model(tokens, modalities).logits
        assert (loaded(tokens, modality_ids=modalities).logits - ours).abs().max().item() <= 1e-5
        assert (loaded(tokens).logits - model(tokens, derived).logits).abs().max().item() <= 1e-5
        loss = loaded(tokens, modality_ids=modalities, labels=tokens).loss
        expected = torch.nn.functional.cross_entropy(ours[:, :-1].reshape(-1, 97), tokens[:, 1:].reshape(-1))
        assert torch.allclose(loss, expected)
        back = import_hf(tmp_path / "hf")
        assert torch.equal(back(tokens, modalities).logits, ours)
    assert_same_weights(back, model)


def test_modality_ids_are_required_without_a_layout(tmp_path):
    export_hf(build_model(tiny_config()), tmp_path / "hf")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    with pytest.raises(InputError, match="modality_ids are required"):
        loaded(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(InputError, match="no padding mask"):
        loaded(torch.zeros(1, 4, dtype=torch.long), modality_ids=torch.zeros(1, 4, dtype=torch.long),
               attention_mask=torch.tensor([[0, 1, 1, 1]]))


REMOTE_LOAD = textwrap.dedent("""
    import sys
    import transformers
    from safetensors.torch import load_file, save_file

    directory, inputs, outputs = sys.argv[1:]
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    assert "mot.interop.hf_model" not in sys.modules  # the copied code ran, not mot's module
    batch = load_file(inputs)
    with __import__("torch").no_grad():
        given = model(batch["tokens"], modality_ids=batch["modalities"]).logits
        derived = model(batch["tokens"]).logits
    save_file({"given": given, "derived": derived}, outputs)
""")


def test_the_copied_code_loads_with_trust_remote_code_in_a_fresh_python(tmp_path):
    """A Python that has not imported mot's class (else transformers would take the registered class)."""
    from safetensors.torch import load_file, save_file

    model = randomised_norms(build_model(tiny_config(norm_placement="post", qk_norm=True)).eval())
    export_hf(model, tmp_path / "hf", layout=LAYOUT)
    tokens, modalities = random_batch(model.config, length=21)
    save_file({"tokens": tokens, "modalities": modalities}, str(tmp_path / "inputs.safetensors"))
    environment = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    arguments = [str(tmp_path / name) for name in ("hf", "inputs.safetensors", "outputs.safetensors")]
    done = subprocess.run([sys.executable, "-c", REMOTE_LOAD, *arguments], env=environment, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = load_file(str(tmp_path / "outputs.safetensors"))
    derived = torch.from_numpy(LAYOUT.modality_of(tokens.numpy()))
    with torch.no_grad():
        assert (outputs["given"] - model(tokens, modalities).logits).abs().max().item() <= 1e-5
        assert (outputs["derived"] - model(tokens, derived).logits).abs().max().item() <= 1e-5


def test_an_export_never_overwrites_a_model(tmp_path):
    export_hf(build_model(tiny_config()), tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    with pytest.raises(ConfigError, match="already holds a model"):
        export_hf(dense_llama_shaped(), tmp_path)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"already holds a model \(pytorch_model.bin\)"):
        export_hf(dense_llama_shaped(), tmp_path / "other")
    with pytest.raises(VocabError, match="modalities"):  # a layout of other modalities
        export_hf(build_model(tiny_config()), tmp_path / "third", layout=VocabLayout({"text": 60, "speech": 32}))


def test_import_refuses_pickles_and_damaged_weights(tmp_path, monkeypatch):
    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "pickled" / "model.pt").write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError, match=r"only pickled weights \(model.pt\)"):
        import_hf(tmp_path / "pickled")
    for name, model in (("mot", build_model(tiny_config())), ("llama", dense_llama_shaped())):
        export_hf(model, tmp_path / name)
        weights = tmp_path / name / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match=f"{weights}.*SHA-256"):
            import_hf(tmp_path / name)
        import_hf(tmp_path / name, verify=False)  # the flipped bit is in a weight: still loads


# ------------------------------------------------------------------------------------ the CLI --

def trained_run(tmp_path, corpus):
    """A run directory (``config.yaml`` + one checkpoint) of a 1-layer model on ``corpus``."""
    from mot.runs.checkpoints import CheckpointManager, model_optimizer_state
    from mot.runs.recipe import load_recipe
    from mot.runs.run_dir import prepare_run_dir
    from mot.train.optim import build_optimizer

    config = load_recipe(None, ["name=run", f"out_dir={tmp_path}", f"data.corpus={corpus}", "model.vocab_size=97",
                                "model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.max_seq_len=32",
                                "data.seq_len=32"])
    prepare_run_dir(config)
    model = build_model(config.model)
    optimizer = build_optimizer(model, config.optim)
    tokens, modalities = random_batch(model.config)
    model(tokens, modalities).logits.logsumexp(-1).mean().backward()
    optimizer.step()
    CheckpointManager(config.run_dir / "checkpoints").save(1, model_optimizer_state(model, optimizer))
    return config.run_dir, model.eval()


def test_mot_export_format_hf_stores_the_corpus_layout(tmp_path, capsys):
    corpus = tmp_path / "corpus"  # a manifest is all that the layout needs
    corpus.mkdir()
    (corpus / "manifest.json").write_text(json.dumps({"vocab": LAYOUT.to_dict(), "shards": {}, "tokenizers": {}}))
    run_dir, model = trained_run(tmp_path, corpus)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "hf"), "--format", "hf"]) == 0
    assert "exported to" in capsys.readouterr().out
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["modality_sizes"] == LAYOUT.modality_sizes
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tokens, _ = random_batch(model.config)
    with torch.no_grad():
        expected = model(tokens, torch.from_numpy(LAYOUT.modality_of(tokens.numpy()))).logits
        assert (loaded(tokens).logits - expected).abs().max().item() <= 1e-5
    assert_same_weights(import_hf(tmp_path / "hf"), model)


def test_mot_export_format_hf_without_a_readable_corpus_notes_it(tmp_path, capsys):
    run_dir, model = trained_run(tmp_path, tmp_path / "no-corpus")
    assert main(["export", str(run_dir), "--out", str(tmp_path / "hf"), "--format", "hf"]) == 0
    assert "no vocabulary layout stored" in capsys.readouterr().out
    assert json.loads((tmp_path / "hf" / "config.json").read_text()).get("modality_sizes") is None
    assert_same_weights(import_hf(tmp_path / "hf"), model)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "mot")]) == 0  # the default format: mot's own
    assert (tmp_path / "mot" / "checksums.json").is_file() and not (tmp_path / "mot" / "modeling_mot.py").exists()
