"""Packing documents into rows: the batch's metadata agrees with its documents."""

import numpy as np
import pytest
import torch

from mot import ModelConfig, build_model
from mot.data.packing import IGNORE, PAD_DOCUMENT, PackingError, TokenizedDocument, document_stream, pack
from mot.tokenizers.vocab import VocabLayout

LAYOUT = VocabLayout({"text": 50, "image": 16, "speech": 10})
TEXT, IMAGE, SPEECH = (LAYOUT.id_range(m)[0] for m in ("text", "image", "speech"))
MOT = [0, 1, 2]


def doc(doc_id, *segments):
    return TokenizedDocument(doc_id, tuple((m, np.asarray(ids)) for m, ids in segments))


def caption_image(doc_id, words=3, patches=4, seed=0):
    rng = np.random.default_rng(seed)
    return doc(doc_id, ("text", TEXT + rng.integers(0, 50, words)), ("image", IMAGE + rng.integers(0, 16, patches)),
               ("text", TEXT + rng.integers(0, 50, 2)))


def test_document_stream_adds_markers_and_records_spans():
    stream = document_stream(doc("d", ("text", [TEXT + 1]), ("image", [IMAGE, IMAGE + 1]), ("speech", [SPEECH])),
                             LAYOUT)
    bos, eos, boi, eoi = (LAYOUT.special(s) for s in ("<bos>", "<eos>", "<boi>", "<eoi>"))
    bsp, esp = LAYOUT.markers("speech")
    assert stream.tokens.tolist() == [bos, TEXT + 1, boi, IMAGE, IMAGE + 1, eoi, bsp, SPEECH, esp, eos]
    assert stream.spans == ((3, 5, "image"), (7, 8, "speech"))


def test_packed_metadata_agrees_with_the_documents():
    documents = [caption_image(f"d{i}", words=2 + i, seed=i) for i in range(5)]
    batch = pack(documents, seq_len=24, layout=LAYOUT, modality_tower_index=MOT, bidirectional=["image"])
    streams = [document_stream(d, LAYOUT) for d in documents]
    # every document appears whole, in order, with positions 0.. and its own document id
    found = []
    for b in range(batch.tokens.shape[0]):
        row_docs = batch.document_ids[b]
        for d in sorted(set(row_docs.tolist()) - {PAD_DOCUMENT}):
            where = (row_docs == d).nonzero().flatten()
            assert (where == torch.arange(where[0], where[-1] + 1)).all()  # contiguous
            assert batch.positions[b, where].tolist() == list(range(len(where)))
            found.append(batch.tokens[b, where].tolist())
            # targets: the next token of the same document; the last one trains nothing
            assert batch.targets[b, where[:-1]].tolist() == batch.tokens[b, where[1:]].tolist()
            assert batch.targets[b, where[-1]] == IGNORE
            # image spans: bidirectional span ids exactly on the image content
            span = batch.span_ids[b, where]
            image = torch.from_numpy(LAYOUT.modality_of(batch.tokens[b, where].numpy()) == 1)
            image &= batch.tokens[b, where] != LAYOUT.special("<boi>")
            assert ((span != 0) == image).all() and len(set(span[span != 0].tolist())) == 1
    assert found == [s.tokens.tolist() for s in streams]
    padding = batch.document_ids == PAD_DOCUMENT
    assert (batch.tokens[padding] == LAYOUT.special("<pad>")).all() and (batch.targets[padding] == IGNORE).all()
    # the routing plan agrees with the modality ids
    flat = batch.modality_ids.reshape(-1)
    assert batch.plan.tower_counts == tuple(int((flat == m).sum()) for m in range(3))
    for tower, index in enumerate(batch.plan.tower_indices):
        assert (flat[index] == tower).all()
    assert (batch.modality_ids == torch.from_numpy(LAYOUT.modality_of(batch.tokens.numpy()))).all()


def test_without_bidirectional_modalities_there_are_no_spans():
    batch = pack([caption_image("a")], seq_len=16, layout=LAYOUT, modality_tower_index=MOT)
    assert (batch.span_ids == 0).all()


def test_long_documents_are_cut_outside_spans():
    long = doc("long", ("text", TEXT + np.arange(9)), ("image", IMAGE + np.arange(6)), ("text", TEXT + np.arange(9)))
    batch = pack([long], seq_len=12, layout=LAYOUT, modality_tower_index=MOT)
    boi, eoi = LAYOUT.markers("image")
    rows = batch.tokens.tolist()
    assert sum(len([t for t in row if t != LAYOUT.special("<pad>")]) for row in rows) == 1 + 9 + 8 + 9 + 1
    for row in rows:  # an image is whole in one row: its <boi> and <eoi> are together
        assert row.count(boi) == row.count(eoi)
    with pytest.raises(PackingError, match=r"document 'huge': a image span of 18 tokens .* row of 12"):
        pack([doc("huge", ("image", IMAGE + np.zeros(16, dtype=int)))], 12, LAYOUT, MOT)


def test_bad_input_is_named():
    with pytest.raises(PackingError, match=r"document 'x': a image segment holds ids outside"):
        pack([doc("x", ("image", [TEXT]))], 12, LAYOUT, MOT)
    with pytest.raises(PackingError, match="no documents"):
        pack([], 12, LAYOUT, MOT)
    with pytest.raises(PackingError, match="not in"):
        pack([caption_image("a")], 12, LAYOUT, MOT, bidirectional=["video"])


def test_the_model_takes_a_packed_batch_and_documents_stay_separate():
    config = ModelConfig(vocab_size=LAYOUT.vocab_size, d_model=32, n_layers=2, n_heads=4, max_seq_len=64,
                         modalities=LAYOUT.modalities)
    LAYOUT.check_model(config)
    model = build_model(config)
    documents = [caption_image(f"d{i}", seed=i) for i in range(3)]
    batch = pack(documents, seq_len=40, layout=LAYOUT, modality_tower_index=config.modality_tower_index,
                 bidirectional=["image"])
    with torch.no_grad():
        packed = model(**batch.model_inputs()).logits
        alone = pack(documents[1:2], 40, LAYOUT, config.modality_tower_index, bidirectional=["image"])
        single = model(**alone.model_inputs()).logits
    where = batch.document_ids[0] == 1
    length = int(where.sum())
    assert torch.allclose(packed[0, where], single[0, :length], atol=1e-5, rtol=0)
