"""Text -> image sampling time with the prompt cached once vs recomputed at every denoising step.

The Transfusion sampler (``mot.generate.transfusion``) computes the prompt's keys and values once
into a frozen KV cache and runs each denoising step over the image's positions alone
(``reuse_prompt=True``); the reference recomputes the whole sequence, prompt and image, at every
step (``reuse_prompt=False``). Both give the same images (tests/generate). This runs both in ONE
process, alternating (A B A B ...), after a warm-up, and reports the median time per image and
the ratio ``recomputed / cached`` for each prompt length (short captions, as in ShapeScenes, and
long interleaved contexts).

The model is the tiny Transfusion recipe's (width 128, 4 layers, U-Net patches) with random
weights: the time does not depend on what the weights are.

    python benchmarks/transfusion_sampling.py
    python benchmarks/transfusion_sampling.py --device cuda --width 1024 --layers 16 --prompt-lengths 32 1024
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from mot.config import ModelConfig
from mot.generate.transfusion import ImageSampling, TransfusionSampler
from mot.model.transformer import build_model
from mot.tokenizers.vocab import VocabLayout


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--architecture", choices=["mot", "dense"], default="mot")
    p.add_argument("--prompt-lengths", type=int, nargs="+", default=[20, 200, 1000])
    p.add_argument("--images", type=int, default=8, help="images per batch (x2 rows with guidance)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps timed per call")
    p.add_argument("--latent", type=int, default=4, help="latent side (4: 2x2 patches -> 4 positions)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    layout = VocabLayout({"text": 4096, "image": 1})
    towers = {"text": "shared", "image": "shared"} if args.architecture == "dense" else {}
    config = ModelConfig(vocab_size=layout.vocab_size, d_model=args.width, n_layers=args.layers, n_heads=args.heads,
                         max_seq_len=max(args.prompt_lengths) + 64, modalities=["text", "image"],
                         **({"towers": towers} if towers else {}),
                         latent=dict(modality="image", channels=4, patch_size=2, unet_channels=[32, 64]))
    model = build_model(config, device=args.device).eval()
    sampler = TransfusionSampler(model, layout, (4, args.latent, args.latent))
    sampling = ImageSampling(steps=args.steps, method="ddpm", cfg_scale=3.0)
    text = layout.id_range("text")[0]
    rows = []
    for length in args.prompt_lengths:
        captions = [[text + (i * 7 + j) % 4096 for j in range(length)] for i in range(args.images)]
        times = {True: [], False: []}
        for reuse in (True, False):  # warm-up
            sampler.text_to_image(captions, sampling, reuse_prompt=reuse)
        for _ in range(args.rounds):
            for reuse in (True, False):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                sampler.text_to_image(captions, sampling, reuse_prompt=reuse)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[reuse].append((time.perf_counter() - start) / args.images)
        cached, full = statistics.median(times[True]), statistics.median(times[False])
        rows.append({"prompt_tokens": length, "cached_ms_per_image": 1e3 * cached,
                     "recomputed_ms_per_image": 1e3 * full, "speedup": full / cached})
    print(f"{args.architecture}, width {args.width}, {args.layers} layers, {args.images} images x 2 (guidance), "
          f"{args.steps} DDPM steps, {(args.latent // 2) ** 2} image positions; {args.device}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.rounds}")
    print(f"{'prompt tokens':>14} {'cached ms/image':>16} {'recomputed ms/image':>20} {'recomputed/cached':>18}")
    for row in rows:
        print(f"{row['prompt_tokens']:>14} {row['cached_ms_per_image']:>16.1f} {row['recomputed_ms_per_image']:>20.1f} "
              f"{row['speedup']:>17.2f}x")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
