"""The generation metrics of ``mot eval``: a checkpoint draws, captions, transcribes and speaks,
and what it made is scored against the corpus's held-out documents.

* **Images** (the evaluation set of one image source and split that ``mot prepare`` keeps under
  ``evaluation/``): for the first ``samples`` items the model draws an image from a caption
  paraphrase (chosen by the seed) and writes a greedy caption of the real image.
  ``fid`` / ``kid``: the drawn images against *every* real image of the set, in the space of the
  corpus's feature network (``tokenizers/image_features``, checked by its hash).
  ``attributes``: for ShapeScenes, the share of drawn images whose attributes, as the feature
  network reads them, are the prompt's (per attribute and all at once).
  ``cider`` / ``bleu``: CIDEr-D and BLEU-4 of the captions against every paraphrase of the real
  caption; for ShapeScenes also the share of captions that name the scene's attributes.
* **Speech** (the held-out utterances of the speech shards, whose texts are known):
  ``wer``: word error rate of greedy transcripts; ``speech_units``: for utterances spoken from
  the texts, the duration error and the Jensen-Shannon distance of the unit distributions to the
  real ones, and the WER of the model's own transcripts of what it said (no independent
  recogniser of generated speech exists here, so that one is circular and named so).
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from ..config import ConfigError
from ..data.prepare.evaluation_sets import FEATURES, read_evaluation_set
from ..data.settings import Corpus
from ..generate.logits import Sampling
from ..generate.transfusion import ImageSampling
from ..runs.recipe import TrainConfig
from ..tokenizers.image_features import ImageFeatureNet
from .attribute_agreement import attribute_agreement
from .conditional import paired_documents
from .image_distance import image_distances
from .speech_scores import duration_error, unit_distribution_distance
from .text_scores import bleu4, cider_d, word_error_rate

IMAGE_METRICS = ("fid", "kid", "attributes", "cider", "bleu")
SPEECH_METRICS = ("wer", "speech_units")


def generation_metrics(pipeline, config: TrainConfig, corpus: Corpus, names: Sequence[str],
                       splits: Sequence[str], options, log: Callable[[str], None]) -> Tuple[dict, dict]:
    """``(numbers, seconds)`` of the generation metrics ``names`` on each of ``splits``, made by
    ``pipeline`` (:func:`mot.generate.pipelines.pipeline_for_run` of the checkpoint)."""
    numbers: Dict[str, dict] = {name: {} for name in names}
    seconds: Dict[str, float] = {}
    for split in splits:
        if any(name in IMAGE_METRICS for name in names):
            started = time.perf_counter()
            found = image_metrics(pipeline, corpus, split, [n for n in names if n in IMAGE_METRICS], options, log)
            _share_time(seconds, found, time.perf_counter() - started)
            for name, value in found.items():
                numbers[name][split] = value
        if any(name in SPEECH_METRICS for name in names):
            started = time.perf_counter()
            found = speech_metrics(pipeline, config, corpus, split, [n for n in names if n in SPEECH_METRICS],
                                   options, log)
            _share_time(seconds, found, time.perf_counter() - started)
            for name, value in found.items():
                numbers[name][split] = value
    return {name: value for name, value in numbers.items() if value}, seconds


def image_metrics(pipeline, corpus: Corpus, split: str, names: Sequence[str], options, log) -> Dict[str, dict]:
    """The image metrics ``names`` on ``options.source``'s evaluation set of ``split``."""
    source = options.source
    if split == "heldout" and source != "shapescenes":
        return {}
    evaluation = read_evaluation_set(corpus.directory, source, split)
    count = min(options.samples, len(evaluation.images))
    rng = np.random.default_rng([options.seed, split_salt(split)])
    prompts = [paraphrases[rng.integers(len(paraphrases))] for paraphrases in evaluation.captions[:count]]
    found: Dict[str, dict] = {}
    if any(name in ("fid", "kid", "attributes") for name in names):
        features = feature_network(corpus)
        log(f"eval: drawing {count} images for {source} {split} captions")
        drawn = draw_images(pipeline, prompts, options)
        if "fid" in names or "kid" in names:
            distances = image_distances(evaluation.images, drawn, features, seed=options.seed)
            found.update({name: {"value": distances[name], "generated": distances["generated"],
                                 "real": distances["real"], **({"std": distances["kid_std"]} if name == "kid" else {})}
                          for name in ("fid", "kid") if name in names})
        if "attributes" in names and source == "shapescenes":
            found["attributes"] = attribute_agreement(features.scene_attributes(drawn), prompts)
    if "cider" in names or "bleu" in names:
        log(f"eval: captioning {count} {source} {split} images")
        captions = pipeline.image_to_text(evaluation.images[:count])
        references = evaluation.captions[:count]
        if "cider" in names:
            found["cider"] = {"value": cider_d(captions, references), "items": count,
                              "examples": [{"caption": c, "true": r[0]} for c, r in zip(captions[:4], references)]}
            if source == "shapescenes":
                found["cider"]["attributes"] = attribute_agreement(captions, [r[0] for r in references])
        if "bleu" in names:
            found["bleu"] = {"value": bleu4(captions, references), "items": count}
    return found


def speech_metrics(pipeline, config: TrainConfig, corpus: Corpus, split: str, names: Sequence[str], options,
                   log) -> Dict[str, dict]:
    """The speech metrics ``names`` on up to ``options.samples`` held-out utterances of ``split``."""
    layout = corpus.layout(config.data.setting)
    pairs = paired_documents(corpus, config.data.setting, split, "speech", options.samples)
    if not pairs:
        return {}
    log(f"eval: transcribing and speaking {len(pairs)} {split} utterances")
    texts = [pipeline.decode_text(pair.text) for pair in pairs]
    units = [layout.to_local("speech", pair.other) for pair in pairs]
    return speech_scores(pipeline, texts, units, names, options)


def speech_scores(pipeline, texts: Sequence[str], units: Sequence[np.ndarray], names: Sequence[str],
                  options) -> Dict[str, dict]:
    """``wer`` of the transcripts of the utterances ``units`` (the speech tokenizer's ids) against
    their ``texts``; ``speech_units`` of what the model says for ``texts`` against ``units``."""
    found: Dict[str, dict] = {}
    if "wer" in names:
        transcripts = pipeline.speech_to_text(units)
        found["wer"] = {"value": word_error_rate(transcripts, texts), "items": len(texts),
                        "examples": [{"transcript": h, "true": r} for h, r in zip(transcripts[:4], texts)]}
    if "speech_units" in names:
        spoken = pipeline.text_to_speech(texts, Sampling(temperature=options.temperature, seed=options.seed))
        durations = duration_error([len(u) for u in spoken], [len(u) for u in units])
        start, stop = pipeline.layout.id_range("speech")
        found["speech_units"] = {
            "duration_error_seconds": durations["mean_absolute_seconds"],
            "duration_error_relative": durations["mean_relative"],
            # None: the model said nothing at all, so there is no distribution to compare
            "unit_js_distance": (unit_distribution_distance(spoken, units, stop - start)
                                 if any(len(u) for u in spoken) else None),
            # the only units -> text model at hand is the model itself: its own reading of what it said
            # (circular: a model that speaks and reads in the same wrong way scores well)
            "self_transcript_wer": word_error_rate(pipeline.speech_to_text(spoken), texts),
            "items": len(texts)}
    return found


def draw_images(pipeline, prompts: List[str], options) -> np.ndarray:
    """``uint8 [N, S, S, 3]`` drawn for ``prompts`` by a Chameleon or Transfusion pipeline."""
    if hasattr(pipeline, "sampler"):  # Transfusion: denoising
        sampling = ImageSampling(options.denoising_steps, None, options.cfg_scale, seed=options.seed)
        return pipeline.text_to_image(prompts, sampling)
    return pipeline.text_to_image(prompts, Sampling(temperature=options.temperature, seed=options.seed))


def feature_network(corpus: Corpus) -> ImageFeatureNet:
    """The corpus's feature network, checked against the fingerprint its manifest records."""
    path = corpus.directory / "tokenizers" / FEATURES
    recorded = corpus.manifest.get("tokenizers", {}).get(FEATURES, {}).get("fingerprint")
    if not path.is_dir() or recorded is None:
        raise ConfigError(f"{corpus.directory} has no image feature network ({path}); run `mot prepare` with the "
                          f"corpus's config again to train it (everything else is reused)")
    network = ImageFeatureNet.load(path)
    if network.fingerprint() != recorded:
        raise ConfigError(f"{path}: its hash {network.fingerprint()[:12]} is not the {recorded[:12]} the corpus's "
                          f"manifest records; the feature network was replaced or damaged")
    return network.eval()


def split_salt(split: str) -> int:
    """A number per split, so each split's paraphrase choices are their own."""
    return sum(split.encode())


def _share_time(seconds: Dict[str, float], found: Dict[str, dict], elapsed: float) -> None:
    """Split ``elapsed`` evenly over the metrics measured together (they share the drawing)."""
    for name in found:
        seconds[name] = round(seconds.get(name, 0.0) + elapsed / len(found), 2)
