"""``mot generate RUN``: images for ``--prompt`` captions (each a PNG, and a grid with the prompts)
and captions for ``--caption`` image files, with a run of any setting: the Transfusion setting draws
by diffusion, the Chameleon settings by decoding VQ codes."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.console import Console

from ..config import ConfigError
from .arguments import add_out, add_run, positive_int


def add_parser(verbs) -> None:
    generate = verbs.add_parser("generate", help="text -> image and image -> text with a trained run")
    add_run(generate, "a run directory (runs/<name>) of any setting")
    generate.add_argument("--prompt", action="append", default=[], help="a caption to draw (repeatable)")
    generate.add_argument("--caption", action="append", default=[], metavar="IMAGE",
                          help="an image file (PNG, JPEG) to caption (repeatable)")
    generate.add_argument("--continue", action="append", default=[], dest="continuations", metavar="TEXT",
                          help="chameleon runs: a text to continue freely; the model may draw images (repeatable)")
    generate.add_argument("--max-new-tokens", type=positive_int, default=200, metavar="N",
                          help="tokens each --continue may add (default 200)")
    generate.add_argument("--speak", action="append", default=[], metavar="TEXT",
                          help="chameleon_speech runs: a text to say; writes its speech as .wav (by the corpus's "
                               "vocoder) and its units as .npy (repeatable)")
    generate.add_argument("--transcribe", action="append", default=[], metavar="SPEECH",
                          help="chameleon_speech runs: a recording (.wav) or speech units (.npy of unit ids) to "
                               "write down (repeatable)")
    add_out(generate, "directory for the images (default ./samples)", default="samples")
    generate.add_argument("--per-prompt", type=positive_int, default=1, help="images per prompt (default 1)")
    generate.add_argument("--cfg-scale", type=float, default=3.0, help="classifier-free guidance (default 3; 1: none)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--temperature", type=float, default=0.0, help="captions: 0 (default) is greedy")
    diffusion = generate.add_argument_group("transfusion runs (diffusion)")
    diffusion.add_argument("--denoising-steps", type=positive_int, default=250, metavar="N",
                           help="denoising steps per image (default 250)")
    diffusion.add_argument("--method", default=None,
                           help="ddpm (default) or ddim for a DDPM run; euler (default) or heun for a flow run")
    codes = generate.add_argument_group("chameleon runs (image codes decoded one by one)")
    codes.add_argument("--image-temperature", type=float, default=1.0,
                       help="image codes' and speech units' temperature (default 1)")
    codes.add_argument("--top-k", type=int, default=0, help="image codes: keep the k best (default 0: all)")
    codes.add_argument("--top-p", type=float, default=1.0, help="image codes: nucleus sampling (default 1: off)")
    generate.set_defaults(run=_generate)


def _generate(args: argparse.Namespace, console: Console) -> int:
    from ..generate.image_files import read_image, read_speech, write_document, write_samples
    from ..generate.logits import Sampling
    from ..generate.pipeline import TransfusionPipeline
    from ..generate.pipelines import pipeline_for_run
    from ..generate.transfusion import ImageSampling, check_temperature

    if not (args.prompt or args.caption or args.continuations or args.speak or args.transcribe):
        raise ConfigError("nothing to do: give --prompt TEXT (text -> image), --caption IMAGE (image -> text), "
                          "--continue TEXT, --speak TEXT or --transcribe SPEECH")
    speech = [read_speech(path) for path in args.transcribe]
    for flag, texts in (("--prompt", args.prompt), ("--continue", args.continuations), ("--speak", args.speak)):
        for text in texts:  # checked before the model loads, as every argument is
            if not text.strip():
                raise ConfigError(f"{flag} {text!r}: a prompt must hold some text")
    check_temperature(args.temperature)
    diffusion = ImageSampling(args.denoising_steps, args.method, args.cfg_scale, seed=args.seed)
    codes = Sampling(temperature=args.image_temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    captions_sampling = Sampling(temperature=args.temperature, seed=args.seed)
    pipeline = pipeline_for_run(args.run_dir, log=console.out)
    transfusion = isinstance(pipeline, TransfusionPipeline)
    if (args.continuations or args.speak or args.transcribe) and transfusion:  # before anything is written
        raise ConfigError("--continue, --speak and --transcribe need a run of the chameleon settings")
    if transfusion:
        diffusion.method = pipeline.sampler.sampling_method(args.method)
    if (args.speak or args.transcribe) and not pipeline.has_speech:
        raise ConfigError("--speak and --transcribe need a run of the chameleon_speech setting")
    if args.prompt:
        prompts = [p for p in args.prompt for _ in range(args.per_prompt)]
        images = (pipeline.text_to_image(prompts, diffusion, log=console.out) if transfusion else
                  pipeline.text_to_image(prompts, codes, guidance=args.cfg_scale, log=console.out))
        grid = write_samples(images, args.prompt, args.per_prompt, args.out, Path(args.run_dir).name)
        how = f"{args.denoising_steps} {diffusion.method} steps" if transfusion else f"image temperature {args.image_temperature}"
        console.out(f"wrote {len(images)} images and {grid} ({how}, guidance {args.cfg_scale}, seed {args.seed})")
    if args.caption:
        size = pipeline.vae.config.image_size if transfusion else pipeline.vq.config.image_size
        images = np.stack([read_image(path, size) for path in args.caption])
        captions = (pipeline.image_to_text(images, temperature=args.temperature, seed=args.seed) if transfusion else
                    pipeline.image_to_text(images, sampling=captions_sampling))
        for path, text in zip(args.caption, captions):
            console.out(f"{path}: {text}")
    # speech spans become WAV files when the corpus has a vocoder
    audio_of = pipeline.speech_audio if not transfusion and pipeline.vocoder is not None else None
    if args.continuations:
        documents = pipeline.continue_document(args.continuations, args.max_new_tokens, codes)
        for index, (prompt, segments) in enumerate(zip(args.continuations, documents)):
            console.out(f"{prompt} -> {write_document(segments, args.out, f'continuation-{index:03d}', audio_of)}")
    if args.speak:
        spoken = pipeline.text_to_speech(args.speak, codes)
        if audio_of is None:
            console.out(f"{pipeline.corpus_dir} has no speech vocoder: writing speech units only; run `mot prepare` "
                        "with its config again to train one (everything else is reused)")
        for index, (text, ids) in enumerate(zip(args.speak, spoken)):
            console.out(f"{text} -> {write_document([('speech', ids)], args.out, f'speech-{index:03d}', audio_of)}")
    if speech:
        units = [value if kind == "units" else pipeline.audio_to_units(value) for kind, value in speech]
        for path, text in zip(args.transcribe, pipeline.speech_to_text(units, sampling=captions_sampling)):
            console.out(f"{path}: {text}")
    return 0
