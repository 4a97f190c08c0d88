"""Fingerprints of a corpus's stages: what changes them, and where two manifests part."""

import numpy as np

from mot.data.documents import Document, ImageSegment, TextSegment
from mot.data.prepare.fingerprints import differences, documents_fingerprint


def scene(pixel=0, caption="a red circle"):
    array = np.zeros((4, 4, 3), dtype=np.uint8)
    array[0, 0, 0] = pixel
    return Document("scene-0", [TextSegment(caption), ImageSegment(array=array)])


def test_documents_fingerprints_change_with_any_pixel_word_or_order():
    same = documents_fingerprint([scene(), scene(caption="a blue square")])
    assert same == documents_fingerprint([scene(), scene(caption="a blue square")]) and len(same) == 16
    assert same != documents_fingerprint([scene(1), scene(caption="a blue square")])
    assert same != documents_fingerprint([scene(caption="a blue square"), scene()])
    assert documents_fingerprint(["to be", "or not"]) != documents_fingerprint(["to be or", "not"])


def test_image_files_count_by_their_bytes(tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(b"one")
    second.write_bytes(b"one")
    fingerprint = documents_fingerprint([Document("d", [ImageSegment(path=str(first))])])
    assert fingerprint == documents_fingerprint([Document("d", [ImageSegment(path=str(second))])])
    second.write_bytes(b"two")
    assert fingerprint != documents_fingerprint([Document("d", [ImageSegment(path=str(second))])])


def test_differences_name_the_first_stage_and_entry_that_differ():
    first = {"documents": {"digits": {"train": "aa", "valid": "bb"}},
             "tokenizers": {"text": {"fingerprint": "cc", "vocab_size": 9}, "image_vq": {"fingerprint": "dd"}},
             "shards": {"shards/digits-train": {"fingerprint": "ee"}}}
    second = {"documents": {"digits": {"train": "aa", "valid": "bb"}},
              "tokenizers": {"text": {"fingerprint": "cc", "vocab_size": 9}, "image_vq": {"fingerprint": "xx"}},
              "shards": {"shards/digits-train": {"fingerprint": "yy"}}}
    assert differences(first, second) == ["tokenizers image_vq: dd != xx", "shards shards/digits-train: ee != yy"]
    older = {"tokenizers": first["tokenizers"], "shards": {"shards/digits-train": {"documents": 3}}}
    assert differences(first, older) == []  # a stage an older manifest has no fingerprint for is not compared


def test_a_source_given_as_two_keeps_every_split():
    """ShapeScenes' held-out scenes come as a source of their own name: both sets of splits stay."""
    from mot.data.prepare.fingerprints import source_fingerprints
    from mot.data.prepare.gathering import Source

    scenes = [scene(i) for i in range(3)]
    main = Source("shapescenes", "captioned", scenes, {"train": np.array([0, 1]), "valid": np.array([2])}, 0)
    heldout = Source("shapescenes", "captioned", scenes[:1], {"heldout": np.array([0])}, 1)
    found = source_fingerprints([main, heldout], {})
    assert set(found["shapescenes"]) == {"train", "valid", "heldout"}
    assert found["shapescenes"]["heldout"] == documents_fingerprint(scenes[:1])
