"""Side by side: what several Chameleon+Speech runs say for the same texts with the same seeds, as
WAV files and log-mel spectrograms, next to the text spoken by a speech engine and that speech
through the corpus's units and vocoder (docs/generation.md).

    python scripts/speech_spectrograms.py runs/compare/chameleon-speech/runs/dense \\
        runs/compare/chameleon-speech/runs/mot --text "a large red circle" --text "a small blue star" \\
        --out docs/images/speech_spectrograms.png --wav-dir docs/audio

Writes the figure (a row per text; columns: the engine's speech, its units resynthesized, then each
run), the WAV files, and prints as markdown what each run transcribes from its own speech and from
the engine's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mot.data.sources import speech
from mot.generate.chameleon import ChameleonPipeline
from mot.generate.logits import Sampling
from mot.io.figures import save_figure
from mot.tokenizers.speech_inversion import DISTANCE_FLOOR
from mot.tokenizers.speech_units import UNITS_PER_SECOND, log_mel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories of the chameleon_speech setting")
    parser.add_argument("--text", action="append", required=True)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--wav-dir", required=True, help="where the WAV files go")
    args = parser.parse_args()
    pipelines = {Path(run).name: ChameleonPipeline.from_run(run, log=lambda _: None) for run in args.runs}
    reference = next(iter(pipelines.values()))
    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    voice = speech.choose_voice(args.seed, 0)
    columns = {"engine": [speech.synthesize(t, voice).audio for t in args.text]}
    columns["vocoded"] = [reference.speech_audio(reference.audio_to_units(a)) for a in columns["engine"]]
    said = {}
    for label, pipeline in pipelines.items():
        said[label] = pipeline.text_to_speech(args.text, sampling)
        columns[label] = [pipeline.speech_audio(units) for units in said[label]]
    wav_dir = Path(args.wav_dir)
    wav_dir.mkdir(parents=True, exist_ok=True)
    for label, audios in columns.items():
        for row, audio in enumerate(audios):
            speech.write_wav(wav_dir / f"speech-{row}-{label}.wav", audio)
    titles = {"engine": voice.speaker_id, "vocoded": "its units, vocoded"}
    figure = _figure({titles.get(label, label): audios for label, audios in columns.items()}, args.text, Path(args.out))
    print(f"wrote {figure} and {wav_dir}/speech-*.wav (temperature {args.temperature}, top-k {args.top_k}, "
          f"seeds {args.seed}..{args.seed + len(args.text) - 1})")
    engine = [reference.audio_to_units(a) for a in columns["engine"]]
    print("\n| text | run | transcript of its own speech | transcript of the engine's speech |")
    print("|---|---|---|---|")
    for label, pipeline in pipelines.items():
        own, heard = pipeline.speech_to_text(said[label]), pipeline.speech_to_text(engine)
        for row, text in enumerate(args.text):
            print(f"| {text} | {label} | {own[row]} | {heard[row]} |")


def _figure(columns, texts, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(texts), len(columns), figsize=(3.2 * len(columns), 1.9 * len(texts)),
                                squeeze=False)
    for column, (label, audios) in enumerate(columns.items()):
        for row, audio in enumerate(audios):
            features = np.maximum(log_mel(audio), np.log(DISTANCE_FLOOR)).T  # [mels, frames], floored as distances are
            axis = axes[row][column]
            axis.imshow(features, origin="lower", aspect="auto", cmap="magma",
                        extent=(0, features.shape[1] / UNITS_PER_SECOND, 0, features.shape[0]))
            axis.set_title(label if row == 0 else "", fontsize=8)
            axis.set_ylabel(texts[row] if column == 0 else "", fontsize=7)
            axis.tick_params(labelsize=6)
            axis.set_xlabel("s" if row == len(texts) - 1 else "", fontsize=7)
    return save_figure(figure, out)


if __name__ == "__main__":
    main()
