"""Metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vfl.evaluation.metrics import (
    evaluate_candidates,
    hit_rate_at_k,
    log_loss,
    ndcg_at_k,
    positive_rank,
    roc_auc,
)


def test_rank_counts_ties_against_the_positive() -> None:
    scores = np.array([[0.5, 0.9, 0.1, 0.5], [0.9, 0.1, 0.2, 0.3]])
    assert positive_rank(scores).tolist() == [2, 0]


def test_hit_rate_by_hand() -> None:
    # ranks: 0, 2, 3 -> with k=3 two of three users hit
    scores = np.array([[4.0, 1, 2, 3], [2.0, 3, 4, 1], [1.0, 2, 3, 4]])
    assert hit_rate_at_k(scores, 3) == pytest.approx(2 / 3)
    assert hit_rate_at_k(scores, 1) == pytest.approx(1 / 3)


def test_ndcg_by_hand() -> None:
    scores = np.array([[4.0, 1, 2, 3], [2.0, 3, 4, 1], [1.0, 2, 3, 4]])
    expected = (1.0 + 1.0 / math.log2(4) + 0.0) / 3  # ranks 0 and 2 hit, rank 3 misses at k=3
    assert ndcg_at_k(scores, 3) == pytest.approx(expected)


def test_constant_scorer_gets_nothing() -> None:
    scores = np.zeros((5, 100))
    assert hit_rate_at_k(scores, 10) == 0.0
    assert roc_auc(np.r_[1, 0, 0], np.r_[0.3, 0.3, 0.3]) == pytest.approx(0.5)


def test_auc_by_hand() -> None:
    # pairs (pos, neg): (0.8,0.3) win, (0.8,0.9) loss, (0.4,0.3) win, (0.4,0.9) loss -> 0.5
    assert roc_auc(np.r_[1, 0, 1, 0], np.r_[0.8, 0.3, 0.4, 0.9]) == pytest.approx(0.5)
    # one tie counts half: (0.5,0.5) tie, (0.5,0.1) win -> 0.75
    assert roc_auc(np.r_[1, 0, 0], np.r_[0.5, 0.5, 0.1]) == pytest.approx(0.75)
    assert roc_auc(np.r_[0, 1], np.r_[0.1, 0.9]) == 1.0


def test_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both"):
        roc_auc(np.r_[1, 1], np.r_[0.1, 0.2])


def test_log_loss_by_hand() -> None:
    got = log_loss(np.r_[1, 0], np.r_[0.8, 0.4])
    assert got == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert math.isfinite(log_loss(np.r_[1], np.r_[0.0]))  # clipped, not inf


def test_evaluate_candidates_bundle() -> None:
    probs = np.array([[0.9, 0.1, 0.2], [0.1, 0.5, 0.6]])
    m = evaluate_candidates(probs, k=1)
    assert m.hr == 0.5 and m.ndcg == 0.5
    assert m.as_dict()["hr@1"] == 0.5
    # positives 0.9, 0.1 vs negatives 0.1, 0.2, 0.5, 0.6: 4 wins + 0 + one tie(0.1) -> 4.5/8
    assert m.auc == pytest.approx(4.5 / 8)
