"""The document schema: documents and segments are validated when built, and errors keep their place."""

import pickle

import numpy as np
import pytest

from mot.data import documents as D
from mot.data.documents import Document, DocumentError, ImageSegment, SpeechSegment, TextSegment


@pytest.mark.parametrize("build, problem", [
    (lambda: TextSegment(""), "text is empty"),
    (lambda: TextSegment(b"bytes"), "text must be a string"),
    (lambda: ImageSegment(), "exactly one of"),
    (lambda: ImageSegment(array=np.zeros((2, 2, 3), dtype=np.float32)), "dtype float32"),
    (lambda: ImageSegment(array=np.zeros((0, 2), dtype=np.uint8)), "H, W >= 1"),
    (lambda: SpeechSegment(""), "speech path must be a non-empty string"),
    (lambda: SpeechSegment("a.wav", speaker=""), "speaker must be a non-empty string"),
    (lambda: Document("", [TextSegment("x")]), "'id' must be a non-empty string"),
    (lambda: Document("d", []), "at least one segment"),
    (lambda: Document("d", ["text"]), "segment 0 is a str"),
    (lambda: Document("d", [TextSegment("x")], meta=[1]), "'meta' must be a JSON object"),
])
def test_documents_built_in_memory_are_validated(build, problem):
    with pytest.raises(DocumentError, match=problem.replace("(", "\\(").replace("[", "\\[")):
        build()


def test_image_arrays_are_stored_read_only_uint8():
    segment = ImageSegment(array=[[1, 2], [3, 4]])
    assert segment.array.dtype == np.uint8 and not segment.array.flags.writeable
    assert segment == ImageSegment(array=np.array([[1, 2], [3, 4]], dtype=np.uint8))
    assert segment != ImageSegment(array=[[1, 2, 3, 4]])


def test_errors_survive_pickling_from_a_worker_process():
    error = DocumentError("text is empty", D.EMPTY_TEXT).located(path="a.jsonl", line=4,
                                                                 doc_id="d", segment="segment 1")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) == "a.jsonl, line 4, document 'd', segment 1: text is empty"
    assert copy.reason == D.EMPTY_TEXT and copy.line == 4

