"""Caption and transcript metrics: CIDEr-D and BLEU-4 (the COCO scorers) and word error rate.

Image -> text is scored with the standard COCO caption metrics from pycocoevalcap, so numbers are
comparable with published ones, and speech -> text (or a transcript of generated speech) with
corpus WER from jiwer. Every text first goes through :func:`tokenize_caption`, a pure-Python
stand-in for COCO's PTB tokenizer, which needs Java.

Reading CIDEr-D on small sets: pycocoevalcap's ``Cider`` computes its IDF over the references of
the evaluated set itself (an n-gram's weight is ``log(N) - log(df)`` with ``N`` the number of
items scored and ``df`` the number of items whose references contain it). So an n-gram that every
item's references share weighs nothing (a caption template's fixed words, on a templated data
set, earn no credit), scores of different sets are only loosely comparable, and a set of one
item always scores 0. Compare CIDEr-D only between models scored on the same, reasonably large,
set.
"""

from __future__ import annotations

import re
from typing import Dict, List, Sequence, Tuple

import jiwer
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from ..errors import MotError

# a word: letters and digits, with apostrophes allowed only between them ("don't", not "'quoted'")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


class MetricInputError(MotError, ValueError):
    """Texts, lengths or unit ids a metric cannot score; the message names the metric and item."""


def tokenize_caption(text: str) -> str:
    """``text`` lower-cased, with punctuation removed and words separated by single spaces.

    The stand-in for COCO's PTB tokenizer (which needs Java): words are runs of letters and
    digits, an apostrophe is kept inside a word ("don't") and every other character separates
    words ("well-lit" -> "well lit", "A red circle." -> "a red circle").
    """
    return " ".join(_WORD.findall(text.lower()))


def _check_texts(metric: str, name: str, texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise MetricInputError(f"{metric}: {name} is one string, not a list of strings")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise MetricInputError(f"{metric}: {name}[{index}] is {text!r}, not a string")


def _checked_pairs(metric: str, candidates: Sequence[str],
                   references: Sequence[Sequence[str]]) -> Tuple[List[str], List[List[str]]]:
    """Candidates and reference lists tokenized, after checking they pair up and every reference
    has a word (a wordless reference cannot be matched, and breaks pycocoevalcap's scorers)."""
    _check_texts(metric, "candidates", candidates)
    if isinstance(references, str):
        raise MetricInputError(f"{metric}: references is one string, not a list of reference lists")
    if len(candidates) != len(references):
        raise MetricInputError(f"{metric}: {len(candidates)} candidates but {len(references)} reference lists")
    if not candidates:
        raise MetricInputError(f"{metric}: no candidates to score")
    tokenized_references = []
    for index, refs in enumerate(references):
        _check_texts(metric, f"references[{index}]", refs)
        if not refs:
            raise MetricInputError(f"{metric}: references[{index}] is an empty list")
        tokenized = [tokenize_caption(ref) for ref in refs]
        if not all(tokenized):
            raise MetricInputError(f"{metric}: references[{index}] has a reference with no words")
        tokenized_references.append(tokenized)
    return [tokenize_caption(c) for c in candidates], tokenized_references


def _coco_inputs(metric: str, candidates: Sequence[str], references: Sequence[Sequence[str]]
                 ) -> Tuple[Dict[int, List[str]], Dict[int, List[str]]]:
    """``(gts, res)``: the dicts pycocoevalcap's scorers take, keyed by item index."""
    tokenized_candidates, tokenized_references = _checked_pairs(metric, candidates, references)
    gts = dict(enumerate(tokenized_references))
    res = {index: [candidate] for index, candidate in enumerate(tokenized_candidates)}
    return gts, res


def cider_d_scores(candidates: Sequence[str], references: Sequence[Sequence[str]]
                   ) -> Tuple[float, List[float]]:
    """``(corpus, per_item)`` CIDEr-D of ``candidates[i]`` against ``references[i]``.

    pycocoevalcap's ``Cider`` is the CIDEr-D variant (clipped n-gram counts, a Gaussian length
    penalty with sigma 6, scaled by 10); the corpus score is the mean of the per-item scores.
    IDF comes from the references of this set (see the module docstring), so one item scores 0.
    """
    gts, res = _coco_inputs("cider_d", candidates, references)
    corpus, per_item = Cider().compute_score(gts, res)
    return float(corpus), [float(score) for score in per_item]


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus CIDEr-D of ``candidates`` against their reference lists (see :func:`cider_d_scores`)."""
    return cider_d_scores(candidates, references)[0]


def bleu4(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 of ``candidates`` against their reference lists, as COCO reports it.

    n-gram matches and lengths are summed over the corpus before the geometric mean, and the
    brevity penalty uses each candidate's closest reference length.
    """
    gts, res = _coco_inputs("bleu4", candidates, references)
    per_order, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return float(per_order[3])


def word_error_rate(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus WER: word edits (substitutions, deletions, insertions) summed over all pairs,
    divided by the total number of reference words, after :func:`tokenize_caption` on both sides.

    Summing before dividing weights long references by their length, unlike a mean of per-pair
    rates. An empty hypothesis is allowed (all its reference words are deleted); a reference
    with no words is an error, as it has no rate.
    """
    metric = "word_error_rate"
    _check_texts(metric, "hypotheses", hypotheses)
    _check_texts(metric, "references", references)
    if len(hypotheses) != len(references):
        raise MetricInputError(f"{metric}: {len(hypotheses)} hypotheses but {len(references)} references")
    if not references:
        raise MetricInputError(f"{metric}: no hypotheses to score")
    tokenized_references = [tokenize_caption(ref) for ref in references]
    for index, ref in enumerate(tokenized_references):
        if not ref:
            raise MetricInputError(f"{metric}: references[{index}] has no words")
    tokenized_hypotheses = [tokenize_caption(hyp) for hyp in hypotheses]
    return float(jiwer.process_words(tokenized_references, tokenized_hypotheses).wer)
