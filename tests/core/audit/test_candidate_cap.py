"""Duplicate candidates are capped per image (issue 13, audit at 10k images): look-alike images
propose their k nearest, not every image in range, and a large exact group stays one set."""

from __future__ import annotations

import numpy as np

from core.audit.duplicates import (
    CANDIDATE_PHASH_BITS,
    NEIGHBOURS,
    candidate_pairs,
    duplicate_sets,
    select_pairs,
)


def _look_alike_hashes(n: int, seed: int = 0) -> list[str]:
    """n 64-bit pHashes within a few bits of one another (slices of one scanner look alike)."""
    rng = np.random.default_rng(seed)
    base = int(rng.integers(0, 2**63))
    out = []
    for _ in range(n):
        value = base
        for bit in rng.choice(64, size=int(rng.integers(1, 5)), replace=False):
            value ^= 1 << int(bit)
        out.append(f"{value:016x}")
    return out


def _hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def test_look_alikes_propose_their_nearest_not_everything():
    n = 300
    phashes = _look_alike_hashes(n)
    distance = np.array([[_hamming(a, b) for b in phashes] for a in phashes])
    np.fill_diagonal(distance, 99)
    assert (distance <= CANDIDATE_PHASH_BITS).sum() // 2 > 40 * n  # all in range of one another
    rng = np.random.default_rng(1)
    descriptors = rng.normal(size=(n, 32)).astype(np.float32)
    candidates = candidate_pairs([f"h{i}" for i in range(n)], phashes, descriptors=descriptors)
    assert len(candidates) <= 2 * NEIGHBOURS * n
    per_image = np.bincount(np.concatenate([candidates["i"], candidates["j"]]), minlength=n)
    assert per_image.min() >= NEIGHBOURS
    pairs = set(zip(candidates["i"], candidates["j"], strict=True))
    for row in range(n):  # each image's nearest hash is among its candidates
        nearest = distance[row].min()
        assert any(distance[row, other] == nearest and (min(row, other), max(row, other)) in pairs
                   for other in range(n)), row
    assert candidates["phash_distance"].tolist() == [
        _hamming(phashes[i], phashes[j]) for i, j in zip(candidates["i"], candidates["j"], strict=True)]


def test_far_hashes_are_no_candidates():
    rng = np.random.default_rng(2)
    phashes = [f"{int(v):016x}" for v in rng.integers(0, 2**63, size=50)]  # ~32 bits apart
    candidates = candidate_pairs([f"h{i}" for i in range(50)], phashes)
    assert (candidates["phash_distance"] > CANDIDATE_PHASH_BITS).sum() == 0
    assert len(candidates) == sum(_hamming(a, b) <= CANDIDATE_PHASH_BITS
                                  for i, a in enumerate(phashes) for b in phashes[i + 1:])


def test_a_large_exact_group_stays_one_set_with_linear_pairs():
    n_copies = 40
    hashes = ["same"] * n_copies + [f"other{i}" for i in range(10)]
    phashes = [None] * len(hashes)
    candidates = candidate_pairs(hashes, phashes)
    assert candidates["exact"].all()
    assert len(candidates) <= NEIGHBOURS * n_copies < n_copies * (n_copies - 1) // 2
    sets = duplicate_sets(len(hashes), select_pairs(candidates))
    assert (sets[:n_copies] == 0).all() and (sets[n_copies:] == -1).all()
    small = candidate_pairs(["x"] * 4, [None] * 4)  # a small group keeps every pair
    assert len(small) == 6


def test_pairs_are_verified_in_a_cache_friendly_order_and_returned_sorted():
    from core.audit.duplicates import _visiting_order

    pairs = [(0, 5), (1, 2), (2, 9), (3, 4), (5, 9), (6, 7)]
    order = _visiting_order(10, pairs)
    assert sorted(order.tolist()) == list(range(len(pairs)))  # every pair once
    candidates = candidate_pairs(["a", "b", "a", "c", "b", "a"], [None] * 6)
    assert candidates[["i", "j"]].values.tolist() == sorted(candidates[["i", "j"]].values.tolist())
