"""``mot generate RUN``: images for ``--prompt`` captions (each a PNG, and a grid with the prompts)
and captions for ``--caption`` image files, with a Transfusion-setting run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..data.imaging import open_image
from .transfusion import ImageSampling, check_temperature


def _read_image(path: str, size: int) -> np.ndarray:
    """``uint8 [size, size, 3]``: the file as RGB, resized (box filter) when it is another size.
    An image of absurdly many pixels is refused before it is decoded (:func:`open_image`)."""
    from PIL import Image

    try:
        with open_image(path) as image:
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BOX)
            return np.asarray(image, dtype=np.uint8)
    # Pillow reports bad files through many exception types (OSError, SyntaxError, ValueError,
    # DecompressionBombError ...); every one of them means the file is unusable.
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"--caption {path}: not a readable image ({error})") from None


def generate_command(args, console) -> int:
    from PIL import Image

    from ..eval.samples import sample_grid
    from .pipeline import TransfusionPipeline

    if not args.prompt and not args.caption:
        raise ConfigError("nothing to do: give --prompt TEXT (text -> image) or --caption IMAGE (image -> text)")
    for prompt in args.prompt:  # checked before the model loads, as every argument is
        if not prompt.strip():
            raise ConfigError(f"--prompt {prompt!r}: a prompt must hold some text")
    check_temperature(args.temperature)
    sampling = ImageSampling(args.steps, args.method, args.cfg_scale, seed=args.seed)
    pipeline = TransfusionPipeline.from_run(args.run_dir, log=console.out)
    if args.prompt:
        prompts = [p for p in args.prompt for _ in range(args.per_prompt)]
        images = pipeline.text_to_image(prompts, sampling)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(images):
            Image.fromarray(image).save(out / f"sample-{index:03d}.png")
        grid = sample_grid({Path(args.run_dir).name: images}, args.prompt, args.per_prompt, out / "grid.png")
        console.out(f"wrote {len(images)} images and {out / grid} ({args.steps} {args.method} steps, "
                    f"guidance {args.cfg_scale}, seed {args.seed})")
    if args.caption:
        size = pipeline.vae.config.image_size
        images = np.stack([_read_image(path, size) for path in args.caption])
        for path, text in zip(args.caption, pipeline.image_to_text(images, temperature=args.temperature,
                                                                    seed=args.seed)):
            console.out(f"{path}: {text}")
    return 0
