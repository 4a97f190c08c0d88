"""Caption and transcript metrics: CIDEr-D and BLEU-4 match pycocoevalcap, WER counts edits exactly."""

from __future__ import annotations

import pytest
from pycocoevalcap.cider.cider import Cider

from mot.eval.text_scores import (MetricInputError, bleu4, cider_d, cider_d_scores, tokenize_caption,
                                  word_error_rate)

# COCO-like captions, already lower-case and unpunctuated as PTB-tokenized text is
REFERENCES = [
    ["a man riding a wave on top of a surfboard", "a surfer rides a large wave in the ocean",
     "a person on a surfboard riding a wave", "a man surfing on a big blue wave"],
    ["a plate of food with broccoli and rice", "a white plate topped with rice and vegetables",
     "broccoli and rice served on a dinner plate"],
    ["two giraffes standing next to a tree", "a pair of giraffes in a grassy field near trees",
     "giraffes eating leaves from a tall tree", "two tall giraffes in the wild",
     "a couple of giraffes standing by a tree"],
    ["a red double decker bus driving down a street", "a double decker bus on a city road",
     "a large red bus parked by the curb"],
    ["a cat sleeping on top of a laptop keyboard", "a cat lying on a computer keyboard",
     "a grey cat curled up on a laptop", "a kitten napping on an open laptop"],
]
CANDIDATES = ["a man riding a wave on a surfboard", "a plate of rice and broccoli",
              "two giraffes standing near a tree", "a red bus driving down the street",
              "a cat laying on a laptop"]


def test_cider_d_equals_pycocoevalcaps_own_cider():
    gts = {f"img{i}": refs for i, refs in enumerate(REFERENCES)}
    res = {f"img{i}": [candidate] for i, candidate in enumerate(CANDIDATES)}
    expected, expected_per_item = Cider().compute_score(gts, res)
    corpus, per_item = cider_d_scores(CANDIDATES, REFERENCES)
    assert corpus == pytest.approx(expected, abs=1e-12)
    assert cider_d(CANDIDATES, REFERENCES) == pytest.approx(expected, abs=1e-12)
    assert per_item == pytest.approx(list(expected_per_item), abs=1e-12)
    assert corpus > 0.5  # good captions of these images, not a degenerate 0


def test_a_perfect_candidate_scores_higher_than_a_wrong_one():
    perfect = [refs[0] for refs in REFERENCES]
    wrong = CANDIDATES[1:] + CANDIDATES[:1]  # every caption describes another image
    assert cider_d(perfect, REFERENCES) > cider_d(CANDIDATES, REFERENCES) > cider_d(wrong, REFERENCES)
    _, per_item = cider_d_scores(wrong, REFERENCES)
    assert all(score < 0.5 for score in per_item)


def test_cider_d_of_a_single_item_is_zero_because_idf_comes_from_the_set():
    assert cider_d([REFERENCES[0][0]], [REFERENCES[0]]) == 0.0


def test_tokenization_ignores_case_and_punctuation():
    assert tokenize_caption("  A red circle.\n") == "a red circle"
    assert tokenize_caption("Don't stop: a WELL-LIT room, 'quoted' 2x!") == "don't stop a well lit room quoted 2x"
    shouted = ["A MAN riding a wave, on a surfboard!"] + CANDIDATES[1:]
    assert cider_d(shouted, REFERENCES) == cider_d(CANDIDATES, REFERENCES)
    assert cider_d(["A red circle."] + CANDIDATES[1:], REFERENCES) == cider_d(["a red circle"] + CANDIDATES[1:], REFERENCES)


def test_bleu4_is_one_for_an_identical_candidate_and_zero_for_a_disjoint_one():
    text = "a man riding a wave on top of a surfboard"
    assert bleu4([text], [[text]]) == pytest.approx(1.0, abs=1e-6)
    assert bleu4(["two giraffes eat green leaves"], [[text]]) == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < bleu4(CANDIDATES, REFERENCES) < 1.0


def test_word_error_rate_counts_edits_over_reference_words():
    # "circle" -> "square" is a substitution and the second "a" is deleted: 2 edits in 7 words
    assert word_error_rate(["a red square on blue background"], ["a red circle on a blue background"]) == pytest.approx(2 / 7)
    assert word_error_rate(["a big red circle"], ["a red circle"]) == pytest.approx(1 / 3)  # one insertion
    assert word_error_rate(["x y z w"], ["a b"]) == pytest.approx(2.0)  # insertions take it above 1
    assert word_error_rate([""], ["a red circle"]) == 1.0
    assert word_error_rate(["A red circle."], ["a red circle"]) == 0.0


def test_corpus_word_error_rate_sums_edits_rather_than_averaging_rates():
    hypotheses = ["red circle", "a small blue square on a white background"]
    references = ["a circle", "a small blue square on a white background"]
    # 1 edit in 2 words and 0 in 8: 1 / 10, where the mean of the two rates would be 0.25
    assert word_error_rate(hypotheses, references) == pytest.approx(0.1)


@pytest.mark.parametrize("metric", [cider_d, bleu4])
def test_caption_metrics_reject_bad_input_naming_the_problem(metric):
    name = metric.__name__
    with pytest.raises(MetricInputError, match=f"{name}: 3 candidates but 2 reference lists"):
        metric(["a", "b", "c"], [["a"], ["b"]])
    with pytest.raises(MetricInputError, match=f"{name}: no candidates"):
        metric([], [])
    with pytest.raises(MetricInputError, match=r"references\[1\] is an empty list"):
        metric(["a cat", "a dog"], [["a cat"], []])
    with pytest.raises(MetricInputError, match=r"candidates\[1\] is 7, not a string"):
        metric(["a cat", 7], [["a cat"], ["a dog"]])
    with pytest.raises(MetricInputError, match=r"references\[0\]\[1\] is None, not a string"):
        metric(["a cat"], [["a cat", None]])
    with pytest.raises(MetricInputError, match=r"references\[0\] is one string"):
        metric(["a cat"], ["a cat"])
    with pytest.raises(MetricInputError, match=r"references\[0\] has a reference with no words"):
        metric(["a cat"], [["?!"]])


def test_word_error_rate_rejects_bad_input_naming_the_problem():
    with pytest.raises(MetricInputError, match="word_error_rate: 2 hypotheses but 1 references"):
        word_error_rate(["a", "b"], ["a"])
    with pytest.raises(MetricInputError, match="no hypotheses"):
        word_error_rate([], [])
    with pytest.raises(MetricInputError, match=r"references\[1\] has no words"):
        word_error_rate(["a cat", "a dog"], ["a cat", " . "])
    with pytest.raises(MetricInputError, match=r"hypotheses\[0\] is b'a cat', not a string"):
        word_error_rate([b"a cat"], ["a cat"])
    with pytest.raises(MetricInputError, match="hypotheses is one string"):
        word_error_rate("a cat", ["a cat"])
    assert issubclass(MetricInputError, ValueError)
