"""Side by side: the images that several Chameleon-setting runs draw for the same prompts with the
same seeds, and the captions they write for the same images (docs/generation.md).

    python scripts/generation_grid.py runs/compare/chameleon/runs/dense runs/compare/chameleon/runs/mot \\
        --prompt "a large red circle on a white background" --prompt "a small blue square on a black background" \\
        --out docs/images/generation_chameleon.png

Writes the grid (a row block per run, a column per prompt) and prints, as markdown, each run's
captions of the first runs' images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mot.generate.chameleon import ChameleonPipeline
from mot.generate.image_files import sample_grid
from mot.generate.logits import Sampling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories of the Chameleon setting")
    parser.add_argument("--prompt", action="append", required=True)
    parser.add_argument("--per-prompt", type=int, default=2)
    parser.add_argument("--cfg-scale", type=float, default=3.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the PNG to write")
    args = parser.parse_args()
    prompts = [p for p in args.prompt for _ in range(args.per_prompt)]
    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    pipelines = {Path(run).name: ChameleonPipeline.from_run(run, log=lambda _: None) for run in args.runs}
    images = {label: pipeline.text_to_image(prompts, sampling, guidance=args.cfg_scale)
              for label, pipeline in pipelines.items()}
    grid = sample_grid(images, args.prompt, args.per_prompt, Path(args.out))
    print(f"wrote {Path(args.out).parent / grid} (temperature {args.temperature}, top-k {args.top_k}, "
          f"guidance {args.cfg_scale}, seeds {args.seed}..{args.seed + len(prompts) - 1})")
    shown = np.concatenate([images[label][::args.per_prompt] for label in list(pipelines)[:1]])
    labels = list(pipelines)
    print("\n| image drawn by " + labels[0] + " for | " + " | ".join(f"{label}'s caption" for label in labels) + " |")
    print("|---|" + "---|" * len(labels))
    captions = {label: pipeline.image_to_text(shown) for label, pipeline in pipelines.items()}
    for index, prompt in enumerate(args.prompt):
        print(f"| {prompt} | " + " | ".join(captions[label][index] for label in labels) + " |")


if __name__ == "__main__":
    main()
