"""Train the image tokenizers (FSQ VQ and KL-VAE) on sklearn digits, print their quality, and
write a PNG grid: held-out originals / VQ reconstructions / VAE reconstructions.

    python scripts/tokenizer_grid.py --vq-steps 500 --vae-steps 500 \
        --out docs/images/tokenizers_digits.png --save /tmp/image_tokenizers

Both models train on the 1,797 digits of the corpus's source (``mot.data.sources.images.digits``:
dark ink on white) except a seeded 10% held out (``holdout_split``); the grid shows held-out
images, which neither model saw. Metrics on the held-out images and on all the
data are printed as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from mot.data.sources.images import digits as digit_documents
from mot.tokenizers.image_common import holdout_split, tensor_to_uint8
from mot.tokenizers.image_vae import ImageVAEConfig, evaluate_image_vae, train_image_vae
from mot.tokenizers.image_vq import ImageVQConfig, evaluate_image_vq, train_image_vq

COLUMNS = 8
SCALE = 4  # 32 px -> 128 px, nearest neighbour, so pixels stay visible
PAD = 4
LABEL_WIDTH = 90


def grid_png(rows: list[tuple[str, np.ndarray]], path: Path) -> None:
    """Rows of ``uint8 [COLUMNS, S, S, 3]`` images, each labelled on the left, as one PNG."""
    size = rows[0][1].shape[1] * SCALE
    width = LABEL_WIDTH + COLUMNS * (size + PAD) + PAD
    height = len(rows) * (size + PAD) + PAD
    canvas = Image.new("RGB", (width, height), (150, 150, 150))  # grey: tiles are white-backed
    draw = ImageDraw.Draw(canvas)
    for row, (label, images) in enumerate(rows):
        top = PAD + row * (size + PAD)
        draw.text((PAD, top + size // 2 - 6), label, fill=(0, 0, 0))
        for column, image in enumerate(images):
            tile = Image.fromarray(image).resize((size, size), Image.NEAREST)
            canvas.paste(tile, (LABEL_WIDTH + PAD + column * (size + PAD), top))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vq-steps", type=int, default=500)
    parser.add_argument("--vae-steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--out", type=Path, default=Path("docs/images/tokenizers_digits.png"))
    parser.add_argument("--save", type=Path, default=None, help="save the tokenizers under DIR/vq, DIR/vae")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    digits = np.stack([document.segments[0].array for document in digit_documents(size=32)])
    _, held_out = holdout_split(len(digits), 0.1, args.seed)  # the split both trainings make
    shown = digits[held_out[:COLUMNS].numpy()]

    vq, vq_metrics = train_image_vq(digits, ImageVQConfig(), steps=args.vq_steps,
                                    batch_size=args.batch_size, seed=args.seed)
    vae, vae_metrics = train_image_vae(digits, ImageVAEConfig(), steps=args.vae_steps,
                                       batch_size=args.batch_size, seed=args.seed)
    for name, model, metrics, evaluate in (("image_vq", vq, vq_metrics, evaluate_image_vq),
                                           ("image_vae", vae, vae_metrics, evaluate_image_vae)):
        metrics.pop("history")
        report = {"tokenizer": name, "threads": torch.get_num_threads(),
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "heldout": metrics, "all_digits": evaluate(model, digits)}
        if args.save:
            model.save(args.save / name.removeprefix("image_"))
            report["fingerprint"] = model.fingerprint()
        print(json.dumps(report))

    grid_png([("original", shown),
              ("VQ (FSQ)", tensor_to_uint8(vq.decode(vq.encode(shown))).numpy()),
              ("VAE (KL)", tensor_to_uint8(vae.decode(vae.encode(shown))).numpy())], args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
