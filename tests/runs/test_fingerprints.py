"""``fingerprints.json``: the corpus, the initial weights and the weights after step 1 of a run, so
two machines' runs of one recipe can be compared stage by stage."""

import json

import torch

from mot.runs.fingerprints import FINGERPRINTS_FILE, weights_fingerprint
from mot.train.trainer import Trainer

from tests.helpers import small_recipe


def quiet(_):
    pass


def fingerprints(run_dir):
    return json.loads((run_dir / FINGERPRINTS_FILE).read_text())


def test_a_run_records_its_corpus_initial_weights_and_first_step(small_corpus, tmp_path):
    recipe = small_recipe(small_corpus, tmp_path / "a", steps=2, checkpoint_every=2, eval_every=2)
    trainer = Trainer(recipe, log=quiet)
    initial = weights_fingerprint(trainer.model)
    trainer.train()
    first = fingerprints(tmp_path / "a" / "run")
    manifest = json.loads((small_corpus / "manifest.json").read_text())
    assert first["initial_weights"] == initial != first["weights_after_step_1"]
    assert first["corpus"]["tokenizers"]["text"] == manifest["tokenizers"]["text"]["fingerprint"]
    assert first["corpus"]["shards"] and first["corpus"]["documents"]
    assert weights_fingerprint(trainer.model) != first["weights_after_step_1"]  # step 2 moved on
    # the same recipe elsewhere: the same three; another seed: other initial weights
    Trainer(small_recipe(small_corpus, tmp_path / "b", steps=1), log=quiet).train()
    assert fingerprints(tmp_path / "b" / "run") == first
    Trainer(small_recipe(small_corpus, tmp_path / "c", steps=1, seed=7), log=quiet).train()
    other = fingerprints(tmp_path / "c" / "run")
    assert other["corpus"] == first["corpus"] and other["initial_weights"] != first["initial_weights"]


def test_the_weights_fingerprint_sees_any_change():
    model = torch.nn.Linear(3, 2)
    before = weights_fingerprint(model)
    assert before == weights_fingerprint(model) and len(before) == 16
    with torch.no_grad():
        model.bias[0] = torch.nextafter(model.bias[0], torch.tensor(1.0))  # one ulp
    assert weights_fingerprint(model) != before
