"""The unified vocabulary: ranges, specials, the token -> modality rule, errors."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from mot import ModelConfig
from mot.tokenizers.vocab import VocabError, VocabLayout

LAYOUT = VocabLayout({"text": 100, "image": 64, "speech": 50})


def test_layout_places_specials_then_modalities():
    assert LAYOUT.specials == ("<pad>", "<bos>", "<eos>", "<boi>", "<eoi>", "<bos_speech>", "<eos_speech>")
    assert LAYOUT.id_range("text") == (7, 107)
    assert LAYOUT.id_range("image") == (107, 171)
    assert LAYOUT.id_range("speech") == (171, 221)
    assert LAYOUT.vocab_size == 221
    assert LAYOUT.markers("image") == (3, 4)


def test_every_token_id_maps_to_exactly_one_modality():
    table = LAYOUT.modality_table()
    assert table.shape == (LAYOUT.vocab_size,)
    for index, modality in enumerate(LAYOUT.modalities):
        start, stop = LAYOUT.id_range(modality)
        assert (table[start:stop] == index).all()
    # ranges are disjoint and, with the specials, cover the vocabulary exactly once
    covered = np.zeros(LAYOUT.vocab_size, dtype=int)
    covered[: len(LAYOUT.specials)] += 1
    for modality in LAYOUT.modalities:
        start, stop = LAYOUT.id_range(modality)
        covered[start:stop] += 1
    assert (covered == 1).all()


def test_special_tokens_belong_to_the_modality_that_follows_them():
    modality = dict(zip(LAYOUT.specials, LAYOUT.modality_of([LAYOUT.special(s) for s in LAYOUT.specials])))
    assert modality == {"<pad>": 0, "<bos>": 0, "<eos>": 0, "<boi>": 1, "<eoi>": 0,
                        "<bos_speech>": 2, "<eos_speech>": 0}


@given(st.sampled_from(["text", "image", "speech"]), st.lists(st.integers(0, 49), min_size=1, max_size=20))
def test_local_global_round_trip(modality, ids):
    global_ids = LAYOUT.to_global(modality, np.array(ids))
    assert (LAYOUT.modality_of(global_ids) == LAYOUT.modalities.index(modality)).all()
    assert LAYOUT.to_local(modality, global_ids).tolist() == ids


def test_errors_name_what_is_wrong():
    with pytest.raises(VocabError, match=r"image token id 64 at position 2 is outside its tokenizer's range \[0, 64\)"):
        LAYOUT.to_global("image", np.array([0, 5, 64]))
    with pytest.raises(VocabError, match=r"token id 221 is outside the vocabulary \[0, 221\)"):
        LAYOUT.modality_of([3, 221])
    with pytest.raises(VocabError, match="unknown modality 'video'"):
        LAYOUT.id_range("video")
    with pytest.raises(VocabError, match="id 5 is not a text token"):
        LAYOUT.to_local("text", [5])
    with pytest.raises(VocabError, match=r"modality_sizes\['image'\]=0"):
        VocabLayout({"text": 10, "image": 0})
    with pytest.raises(VocabError, match="host modality"):
        LAYOUT.markers("text")


def test_round_trip_through_dict_and_model_check():
    assert VocabLayout.from_dict(LAYOUT.to_dict()) == LAYOUT
    tampered = dict(LAYOUT.to_dict(), vocab_size=5)
    with pytest.raises(VocabError, match="vocab_size=5 disagrees"):
        VocabLayout.from_dict(tampered)
    LAYOUT.check_model(ModelConfig(vocab_size=221, modalities=["text", "image", "speech"]))
    with pytest.raises(VocabError, match="model vocab_size=220"):
        LAYOUT.check_model(ModelConfig(vocab_size=220, modalities=["text", "image", "speech"]))
    with pytest.raises(VocabError, match="orders them"):
        LAYOUT.check_model(ModelConfig(vocab_size=221, modalities=["text", "speech", "image"]))


def test_translation_skips_unused_modalities_of_another_tokenizer():
    vq = VocabLayout({"text": 10, "image": 8})
    latent = VocabLayout({"text": 10, "image": 1})
    table = vq.translation_to(latent, used=["text"])
    assert (table[list(range(*vq.id_range("image")))] == -1).all()
    assert table[vq.id_range("text")[0] + 3] == latent.id_range("text")[0] + 3
    assert table[vq.special("<eoi>")] == latent.special("<eoi>")
    with pytest.raises(VocabError, match="image has 8 ids here but 1"):
        vq.translation_to(latent)
