"""Known-answer tests of the faithfulness metrics in core/faithfulness.py (numpy only; the words of the
ground-truth task come from core.pos)."""

from __future__ import annotations

import numpy as np
import pytest

from core import faithfulness as fm
from core import pos

# ------------------------------------------------------------------------------------------------
# perturbation: a fake embedder where every token contributes a fixed vector
# ------------------------------------------------------------------------------------------------

MASK, CLS, SEP = 0, 100, 101
NORMS = {1: 4.0, 2: 3.0, 3: 2.0, 4: 1.0}  # orthogonal contributions of tokens 1..4


def fake_embed(rows: np.ndarray) -> np.ndarray:
    """Sum of per-token vectors: token t in 1..4 adds NORMS[t] * e_t, [CLS]/[SEP] add e_0, the mask adds 0."""
    out = np.zeros((len(rows), 5))
    for r, row in enumerate(rows):
        for t in row:
            if t in NORMS:
                out[r, t] += NORMS[t]
            elif t in (CLS, SEP):
                out[r, 0] += 1.0
    return out


IDS = [CLS, 3, 1, 4, 2, SEP]  # positions 1..4 hold tokens with norms 2, 4, 1, 3
SPECIAL = [True, False, False, False, False, True]
PERFECT = [2, 4, 1, 3]  # positions by decreasing contribution
REVERSED = PERFECT[::-1]


def expected_curve(ranking: list[int], counts: list[int]) -> np.ndarray:
    return np.array([np.sqrt(sum(NORMS[IDS[p]] ** 2 for p in ranking[k:])) for k in counts])


def test_perturbation_curve_of_a_known_embedder():
    x, y = fm.perturbation_curve(fake_embed, IDS, SPECIAL, PERFECT, MASK, step=0.25)
    np.testing.assert_allclose(x, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(y, expected_curve(PERFECT, [0, 1, 2, 3, 4]))
    assert y[0] == pytest.approx(np.sqrt(30)) and y[-1] == 0
    # the paper's 4 % steps: ceil(f * 4) tokens restored at fraction f
    x, y = fm.perturbation_curve(fake_embed, IDS, SPECIAL, PERFECT, MASK)
    assert len(x) == 26 and x[1] == pytest.approx(0.04) and x[-1] == 1.0
    counts = fm.restored_counts(4, x)
    assert counts[0] == 0 and counts[1] == 1 and counts[6] == 1 and counts[7] == 2 and counts[-1] == 4
    np.testing.assert_allclose(y, expected_curve(PERFECT, counts.tolist()))


def test_perturbation_inputs_keep_special_tokens_and_mask_the_rest():
    rows = fm.perturbation_inputs(IDS, SPECIAL, PERFECT, MASK, np.array([0.0, 0.5, 1.0]))
    assert rows.tolist() == [[CLS, 0, 0, 0, 0, SEP], [CLS, 0, 1, 0, 2, SEP], IDS]
    with pytest.raises(ValueError, match="non-special"):
        fm.perturbation_inputs(IDS, SPECIAL, [0, 1, 2, 3], MASK, np.array([0.0]))


def test_aupc_perfect_below_random_below_reversed():
    area = {}
    for name, ranking in (("perfect", PERFECT), ("reversed", REVERSED)):
        area[name] = fm.aupc(*fm.perturbation_curve(fake_embed, IDS, SPECIAL, ranking, MASK))
    rng = np.random.default_rng(0)
    randoms = [fm.aupc(*fm.perturbation_curve(fake_embed, IDS, SPECIAL, fm.relevance_ranking(None, SPECIAL, rng),
                                              MASK)) for _ in range(200)]
    assert area["perfect"] < np.mean(randoms) < area["reversed"]
    assert min(randoms) >= area["perfect"] - 1e-12 and max(randoms) <= area["reversed"] + 1e-12
    # the trapezoid rule on a hand-made curve
    assert fm.aupc([0, 0.5, 1], [1, 0.5, 0]) == pytest.approx(0.5)
    assert fm.aupc([0, 1], [2, 2]) == pytest.approx(2.0)


def test_ranking_from_pooled_pair_relevance():
    matrix = np.array([[5.0, 5.0], [0.1, 0.2], [3.0, -1.0], [1.0, 9.0]])  # rows: [CLS], t1, t2, t3
    assert fm.pooled_relevance(matrix, "a").tolist() == [10.0, pytest.approx(0.3), 2.0, 10.0]
    assert fm.pooled_relevance(matrix, "b").tolist() == [pytest.approx(9.1), pytest.approx(13.2)]
    ranking = fm.relevance_ranking(fm.pooled_relevance(matrix, "a"), [True, False, False, False])
    assert ranking.tolist() == [3, 2, 1]  # special [CLS] never ranked, most relevant first
    assert fm.relevance_ranking([1.0, 1.0, 0.0], [False, False, False]).tolist() == [0, 1, 2]  # ties: position
    random = fm.relevance_ranking(None, [True, False, False, False, True], np.random.default_rng(1))
    assert sorted(random.tolist()) == [1, 2, 3]
    with pytest.raises(ValueError):
        fm.pooled_relevance(matrix, "c")


def test_paired_test():
    a = np.linspace(0, 1, 30)
    b = a + 0.5 + 0.01 * np.sin(np.arange(30))
    test = fm.paired_test(a, b)
    assert test["n"] == 30 and test["p"] < 1e-4 and test["p_less"] < 1e-4 and test["median_diff"] < 0
    assert fm.paired_test(b, a)["p_less"] > 0.99
    same = fm.paired_test(a, a)
    assert same["p"] == 1.0 and same["p_less"] == 1.0


# ------------------------------------------------------------------------------------------------
# distributions, POS subsets, agreement, ground truth
# ------------------------------------------------------------------------------------------------


def test_topk_share_and_negative_share_of_a_hand_made_matrix():
    m = np.array([[3.0, -1.0], [0.5, 0.5]])  # sum 3; by |value|: 3, -1, 0.5, 0.5
    np.testing.assert_allclose(fm.topk_share(m, [0.0, 0.25, 0.5, 0.75, 1.0]), [0, 1, 2 / 3, 2.5 / 3, 1])
    np.testing.assert_allclose(fm.topk_share(m, [0.25, 1.0], total=6.0), [0.5, 0.5])
    assert fm.topk_share(m, [0.1])[0] == pytest.approx(1.0)  # ceil(0.1 * 4) = 1 pair
    assert np.isnan(fm.topk_share(np.array([[1.0, -1.0]]), [0.5])).all()
    assert fm.negative_share(m) == 0.25
    assert fm.negative_share(np.array([[-1.0, -2.0], [0.0, 1.0]])) == 0.5
    with pytest.raises(ValueError):
        fm.topk_share(m, [1.5])


def test_pos_subset_share_and_relation_counts():
    pos_a = ["[CLS]", "NOUN", "VERB"]
    pos_b = ["NOUN", "ADJ"]
    m = np.array([[1.0, 0.5],    # [CLS]-NOUN, [CLS]-ADJ
                  [4.0, -1.0],   # NOUN-NOUN, ADJ-NOUN
                  [2.0, 0.5]])   # NOUN-VERB, ADJ-VERB  -> sum 7
    noun_verb = fm.relations_within(["NOUN", "VERB"])
    assert noun_verb == {"NOUN-NOUN", "NOUN-VERB", "VERB-VERB"}
    assert fm.pos_subset_share(m, pos_a, pos_b, noun_verb) == pytest.approx(6 / 7)
    assert fm.pos_subset_share(m, pos_a, pos_b, {"ADJ-NOUN", "ADJ-VERB"}, total=2.0) == pytest.approx(-0.25)
    assert fm.pos_subset_share(m, pos_a, pos_b, set()) == 0.0
    assert fm.pos_relation("VERB", "NOUN") == fm.pos_relation("NOUN", "VERB") == "NOUN-VERB"
    top = fm.relation_counts(m, pos_a, pos_b, 0.5, exclude=[True, False, False])
    assert top == {"NOUN-NOUN": 1, "NOUN-VERB": 1}  # 4 pairs left, top 2 by |value|
    with pytest.raises(ValueError):
        fm.pos_subset_share(m, pos_a[:2], pos_b, noun_verb)


def test_rank_agreement_and_cosine():
    m = np.arange(12.0).reshape(3, 4) ** 2
    assert fm.matrix_rank_agreement(m, m) == pytest.approx(1.0)
    assert fm.matrix_rank_agreement(m, -m) == pytest.approx(-1.0)
    assert fm.matrix_rank_agreement(m, np.sqrt(m)) == pytest.approx(1.0)  # ranks, not values
    assert np.isnan(fm.matrix_rank_agreement(m, np.ones_like(m)))
    assert fm.cosine_similarity(m, 3 * m) == pytest.approx(1.0)
    eye, anti = np.eye(2), np.array([[0.0, 1.0], [1.0, 0.0]])
    assert fm.cosine_similarity(eye, anti) == pytest.approx(0.0)
    mean, sd, n = fm.average_cosine_similarity([eye, eye, eye], [eye, anti, np.zeros((2, 2))])
    assert (mean, sd, n) == (pytest.approx(0.5), pytest.approx(0.5), 2)  # the all-zero truth is skipped
    with pytest.raises(ValueError):
        fm.matrix_rank_agreement(m, eye)


def test_shared_noun_labels_on_hand_made_sentences(tiny_models):
    a, b = "The dogs chased two cats in Paris.", "A cat saw a dog near Paris yesterday."
    wa, wb = pos.tag_words([a, b], "en")
    assert fm.noun_lemmas(wa) == {"dog", "cat", "paris"}
    assert fm.shared_noun_count(wa, wb) == 3  # lemmas: dogs -> dog, cats -> cat; PROPN Paris counts
    c, d = pos.tag_words(["The children play football.", "A child is playing with a ball."], "en")
    assert fm.shared_noun_count(c, d) == 1  # child; play is a verb, football != ball
    assert fm.shared_noun_count(c, c) == 2
    # token level: every token of a shared noun meets every token of the same noun on the other side
    model = tiny_models["bert"]
    batch = model.tokenize([a, b])
    ta, tb = batch.tokens
    keys = [fm.noun_keys([t.word_index for t in pos.align_tokens(w, tokens, batch.offsets[k],
                                                                  batch.special[k, :len(tokens)].tolist())], w)
            for k, (w, tokens) in enumerate(((wa, ta), (wb, tb)))]
    keys_a, keys_b = keys
    truth = fm.shared_noun_matrix(keys_a, keys_b)
    assert truth.shape == (len(ta), len(tb))
    pairs = {(ta[i], tb[j]) for i, j in zip(*np.nonzero(truth), strict=True)}
    assert ("dogs", "dog") in pairs and ("cats", "cat") in pairs and ("paris", "paris") in pairs
    assert ("dogs", "cat") not in pairs and not truth[0].any() and not truth[:, 0].any()  # [CLS]
    assert truth.sum() == len(pairs) == 3


def test_mean_sd_and_conservation_error():
    assert fm.mean_sd([1.0, 3.0, float("nan")]) == (2.0, 1.0, 2)
    mean, sd, n = fm.mean_sd([])
    assert np.isnan(mean) and np.isnan(sd) and n == 0
    assert fm.conservation_error(np.array([[0.5, 0.25]]), 1.0) == (0.25, 0.25)
    assert fm.conservation_error(np.zeros((1, 1)), 0.0) == (0.0, 0.0)
