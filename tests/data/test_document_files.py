"""The files segments point to: images load as RGB uint8, and a missing or bad file is a clear error."""

import numpy as np
import pytest
import scipy.io.wavfile
from PIL import Image

from mot.data import documents as D
from mot.data.document_files import check_files, load_image
from mot.data.documents import Document, DocumentError, ImageSegment, SpeechSegment, TextSegment


def test_load_image_gives_rgb_uint8(tmp_path):
    rgba = Image.new("RGBA", (4, 2), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # transparent: shown on white, not black
    rgba.save(tmp_path / "a.png")
    pixels = load_image(ImageSegment(path=str(tmp_path / "a.png")))
    assert pixels.dtype == np.uint8 and pixels.shape == (2, 4, 3)
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[1, 1].tolist() == [255, 0, 0]
    grey = load_image(ImageSegment(array=[[0, 100], [200, 255]]))
    assert grey.shape == (2, 2, 3) and grey[1, 0].tolist() == [200, 200, 200]
    Image.new("L", (12, 6), 90).save(tmp_path / "wide.png")
    square = load_image(ImageSegment(path=str(tmp_path / "wide.png")), size=3)
    assert square.shape == (3, 3, 3) and (square == 90).all()
    with pytest.raises(DocumentError, match="image file not found"):
        load_image(ImageSegment(path=str(tmp_path / "nope.png")))


def test_check_files_names_the_segment_whose_file_is_missing_or_bad(tmp_path):
    Image.new("RGB", (2, 2)).save(tmp_path / "a.png")
    scipy.io.wavfile.write(tmp_path / "a.wav", 16_000, np.zeros(160, dtype=np.int16))
    (tmp_path / "noise.wav").write_bytes(b"not audio at all")
    good = [TextSegment("x"), ImageSegment(path=str(tmp_path / "a.png")), SpeechSegment(str(tmp_path / "a.wav"))]
    check_files(Document("good", good))
    for segment, reason in ((ImageSegment(path=str(tmp_path / "a.wav")), D.CORRUPT_IMAGE),
                            (SpeechSegment(str(tmp_path / "gone.wav")), D.MISSING_AUDIO),
                            (SpeechSegment(str(tmp_path / "noise.wav")), D.CORRUPT_AUDIO)):
        with pytest.raises(DocumentError) as caught:
            check_files(Document("bad", [*good, segment]))
        assert caught.value.reason == reason and caught.value.doc_id == "bad"
        assert f"segment 3 ({segment.kind})" in str(caught.value)
