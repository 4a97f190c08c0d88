"""Measure the speech path end to end: synthesize sentences in many voices, fit 500 k-means units
on the training utterances, report unit usage on held-out utterances and the time of each step.

    python scripts/speech_units.py --num 600 --held-out 60 --seed 0 --out /tmp/speech-units

Needs espeak-ng and/or flite (Debian packages of the same names). Prints one JSON line with the
numbers recorded in docs/data.md.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter

import numpy as np

from mot.data.sources.speech import SAMPLE_RATE, available_engines, synthesize_many
from mot.tokenizers.speech_units import SpeechUnitTokenizer, log_mel

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white")
SHAPES = ("circle", "square", "triangle", "star", "heart", "diamond")
SIZES = ("small", "large", "tiny", "big")
RELATIONS = ("left of", "right of", "above", "below", "next to")
TEMPLATES = (
    "a {size} {colour} {shape} {relation} a {colour2} {shape2}",
    "there is a {colour} {shape} {relation} the {shape2}",
    "the {shape} is {colour} and the {shape2} is {colour2}",
    "a {colour} {shape}",
)
SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "how much wood would a woodchuck chuck",
    "please call stella and ask her to bring these things with her from the store",
    "the rain in spain stays mainly in the plain",
    "we will meet at seven o'clock near the old bridge",
    "numbers like one two three four five are easy to say",
    "a journey of a thousand miles begins with a single step",
    "the weather today is cloudy with a chance of rain",
    "music and mathematics share a surprising amount of structure",
)


def make_texts(count: int, seed: int) -> list[str]:
    """Shape captions from small word lists, with one in five a varied everyday sentence."""
    rng = random.Random(seed)
    texts = []
    for i in range(count):
        if i % 5 == 4:
            texts.append(rng.choice(SENTENCES))
            continue
        words = dict(size=rng.choice(SIZES), colour=rng.choice(COLOURS),
                     colour2=rng.choice(COLOURS), shape=rng.choice(SHAPES),
                     shape2=rng.choice(SHAPES), relation=rng.choice(RELATIONS))
        texts.append(rng.choice(TEMPLATES).format(**words))
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=600, help="utterances in all")
    parser.add_argument("--held-out", type=int, default=60, help="last N utterances held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", help="save the fitted tokenizer here")
    args = parser.parse_args()

    texts = make_texts(args.num, args.seed)
    start = time.perf_counter()
    utterances = synthesize_many(texts, seed=args.seed, workers=args.workers)
    synth_s = time.perf_counter() - start
    train, held = utterances[: -args.held_out], utterances[-args.held_out:]
    audio_s = sum(u.duration for u in utterances)

    start = time.perf_counter()
    frames = sum(len(log_mel(u.audio)) for u in train)
    features_s = time.perf_counter() - start
    start = time.perf_counter()
    tokenizer = SpeechUnitTokenizer().fit([u.audio for u in train], SAMPLE_RATE,
                                          num_units=args.units, seed=args.seed)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    held_usage = tokenizer.usage([u.audio for u in held])
    encode_s = time.perf_counter() - start
    train_usage = tokenizer.usage([u.audio for u in train])
    held_units = np.concatenate([tokenizer.encode(u.audio, SAMPLE_RATE) for u in held])
    counts = np.bincount(np.concatenate([tokenizer.encode(u.audio, SAMPLE_RATE) for u in train]),
                         minlength=args.units)
    probabilities = counts[counts > 0] / counts.sum()
    train_speakers = {u.speaker_id for u in train}

    result = {
        "engines": available_engines(),
        "utterances": len(utterances), "train": len(train), "held_out": len(held),
        "speakers": len({u.speaker_id for u in utterances}),
        "utterances_per_engine": dict(Counter(u.speaker_id.split(":")[0] for u in utterances)),
        "held_out_speakers_unseen_in_train": sum(u.speaker_id not in train_speakers for u in held),
        "audio_minutes": round(audio_s / 60, 2),
        "synthesis_s": round(synth_s, 2), "realtime_factor": round(audio_s / synth_s, 1),
        "train_frames": frames, "features_s": round(features_s, 2),
        "units": args.units, "fit_s": round(fit_s, 2),
        "train_usage": round(train_usage, 3), "held_out_usage": round(held_usage, 3),
        "held_out_units": len(held_units), "held_out_encode_s": round(encode_s, 3),
        # Perplexity of the training unit distribution: how many units are used "effectively".
        "train_unit_perplexity": round(float(np.exp(-(probabilities * np.log(probabilities)).sum())), 1),
    }
    if args.out:
        tokenizer.save(args.out)
        result["fingerprint"] = tokenizer.fingerprint()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
