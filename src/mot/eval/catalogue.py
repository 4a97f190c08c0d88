"""The metrics ``mot eval`` computes, what each needs of a run, and the check that a run can have
the ones asked for (a metric the run's setting cannot support is an error naming both).

=============  ==============================================================  ================
metric         what                                                            needs
=============  ==============================================================  ================
loss           validation loss per modality, on the trainer's own batches      any run
causal_loss    the same with every MoE routing each token by itself (top-1     any run
               token choice, as in generation): Expert-Choice's validation
               loss without its view of later tokens (equal to ``loss``
               without an MoE)
perplexity     conditional perplexity, text <-> image and text <-> speech       discrete tokens
fid, kid       text -> image: Frechet / kernel distance of generated to real    images
               images, in the corpus's feature network's space
attributes     text -> image: the share of images whose predicted ShapeScenes   images
               attributes are the prompt's (a CLIP-score analogue)
cider, bleu    image -> text: CIDEr-D and BLEU-4 of greedy captions against     images
               every paraphrase of the real caption; caption attribute match
wer            speech -> text: word error rate of transcripts of held-out       speech
               utterances
speech_units   text -> speech: duration error and unit-distribution distance   speech
               to the real utterances (no recogniser of generated speech)
=============  ==============================================================  ================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..config import ConfigError


@dataclass(frozen=True)
class Metric:
    name: str
    #: the modality the run must have (besides text); None: any run
    needs: Optional[str]
    #: settings whose token form allows the metric (None: every setting)
    settings: Optional[Tuple[str, ...]] = None
    #: generates with the model (slow), as opposed to scoring the corpus's documents
    generates: bool = False


METRICS = {metric.name: metric for metric in (
    Metric("loss", None),
    Metric("causal_loss", None),
    Metric("perplexity", None, settings=("chameleon", "chameleon_speech")),
    Metric("fid", "image", generates=True),
    Metric("kid", "image", generates=True),
    Metric("attributes", "image", generates=True),
    Metric("cider", "image", generates=True),
    Metric("bleu", "image", generates=True),
    Metric("wer", "speech", settings=("chameleon_speech",), generates=True),
    Metric("speech_units", "speech", settings=("chameleon_speech",), generates=True),
)}


def supported(setting: str, modalities: Sequence[str]) -> List[str]:
    """The metrics a run of ``setting`` with ``modalities`` can have, in catalogue order."""
    return [name for name, metric in METRICS.items() if _problem(metric, setting, modalities) is None]


def check_metrics(names: Sequence[str], setting: str, modalities: Sequence[str]) -> List[str]:
    """``names`` (each once, in catalogue order) after checking that each exists and that a run of
    ``setting`` with ``modalities`` can have it; a :class:`ConfigError` names the first that cannot."""
    for name in names:
        if name not in METRICS:
            raise ConfigError(f"--metrics: unknown metric {name!r}; known: {', '.join(METRICS)}")
        problem = _problem(METRICS[name], setting, modalities)
        if problem is not None:
            raise ConfigError(f"--metrics: {name} {problem}")
    return [name for name in METRICS if name in names]


def _problem(metric: Metric, setting: str, modalities: Sequence[str]) -> Optional[str]:
    if metric.needs is not None and metric.needs not in modalities:
        return (f"needs a model of {metric.needs}, and this run of the {setting} setting has only "
                f"{', '.join(modalities)}")
    if metric.settings is not None and setting not in metric.settings:
        return f"is not defined for the {setting} setting (only {', '.join(metric.settings)})"
    if metric.name == "perplexity" and len(modalities) < 2:
        return f"needs a second modality besides text; this run of the {setting} setting has {', '.join(modalities)}"
    return None
