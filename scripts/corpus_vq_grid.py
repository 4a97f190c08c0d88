"""Show what a prepared corpus's image tokenizer keeps on images it never saw: ShapeScenes from
the held-out split (attribute combinations absent from training) and the Fashion-MNIST *test*
split (`mot prepare` reads the train split only), each next to its VQ reconstruction.

    mot prepare --config configs/data/tiny.yaml --out /tmp/tiny
    python scripts/corpus_vq_grid.py /tmp/tiny --out docs/images/vq_tiny_corpus.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer_grid import COLUMNS, grid_png  # noqa: E402  (same layout as the digits grid)

from mot.data.sources.errors import SourceUnavailable  # noqa: E402
from mot.data.sources.images import fashion_mnist  # noqa: E402
from mot.data.sources.shapescenes import shapescenes  # noqa: E402
from mot.tokenizers.image_common import tensor_to_uint8  # noqa: E402
from mot.tokenizers.image_vq import ImageVQ  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path, help="an out_dir written by mot prepare")
    parser.add_argument("--out", type=Path, default=Path("docs/images/vq_tiny_corpus.png"))
    args = parser.parse_args()
    vq = ImageVQ.load(args.prepared / "tokenizers" / "image_vq")
    size = vq.config.image_size
    sources = {"ShapeScenes\nheld out": lambda: shapescenes(COLUMNS, seed=0, split="heldout", size=size),
               "Fashion-MNIST\ntest": lambda: fashion_mnist(split="test", size=size, limit=COLUMNS)}
    rows = []
    for label, make in sources.items():
        try:
            images = np.stack([document.segments[0].array for document in make()])
        except SourceUnavailable as error:
            print(f"skipping {label!r}: {error}")
            continue
        with torch.no_grad():
            reconstructions = tensor_to_uint8(vq.decode(vq.encode(images))).numpy()
        rows += [(label, images), ("VQ", reconstructions)]
    grid_png(rows, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
