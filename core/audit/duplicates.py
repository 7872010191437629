"""Exact and near duplicates, grouped into duplicate sets.

* **Exact**: the same ``pixel_hash`` (the same decoded picture, whatever the bytes).
* **Near**: perceptual-hash distance (bits that differ between two 64-bit pHashes) at most
  ``phash_bits``, *or* embedding cosine distance at most ``cosine``, *or* a crop-aware pixel
  match (:func:`match_score`) of at least ``match``. The hash catches rescaled and recompressed
  copies whatever the encoder; crops move the hash, so candidates also come from each image's
  nearest neighbours (by a centre descriptor and by the embedding) and are verified by finding
  one picture's detail inside the other's at several scales. The hash and the embedding alone
  are weak witnesses on radiographs: different chest films look alike at the 32 x 32 px a pHash
  sees (on covid-chestxray, films of different patients came within 4-8 bits) and sit close
  together in an encoder's space (efficientnet-lite0: different films from cosine distance 0.034,
  crops of one film up to 0.31; the ``pixels`` encoder: different films from 0.005). So the hash
  default is strict (2 bits), the embedding by default only proposes candidates (``cosine`` 0 =
  off; raise it to let the embedding decide alone), and the pixel match does most of the work.

Candidate pairs are kept with every score, so a page can move the thresholds without
recomputing (:func:`select_pairs` + :func:`duplicate_sets`). Candidates are capped per image:
each image proposes its ``NEIGHBOURS`` (5) nearest by pHash within ``CANDIDATE_PHASH_BITS``, by
centre descriptor and by embedding, found through core's neighbour index
(:class:`core.explain.similar.SimilarCases`), so their number and the verification grow with n,
not n^2. Without the cap, images that all look alike (the scale generator's synthetic slices)
gave 14 candidates per image at 1,250 images and more as n grew. A pHash slider raised towards
``CANDIDATE_PHASH_BITS`` therefore sees each image's nearest hashes, not every hash in range.

A duplicate *set* is a connected component of the pair graph. A set whose images belong to more
than one patient id is flagged ``cross_patient``: either one person entered twice (identity
error) or one picture filed under two people; in both cases it can sit on both sides of a
patient-grouped CV split (leakage).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from core.audit.fingerprints import hashes_as_uint64

PHASH_BITS = 2
COSINE = 0.0  # off: the embedding proposes candidates; alone it decides nothing (see above)
MATCH = 0.80
CANDIDATE_PHASH_BITS = 12
NEIGHBOURS = 5  # candidates per image from each of pHash, centre descriptor, embedding
THUMB_CACHE = 2048  # prepared thumbnails kept while verifying candidates
# Widths of the smaller thumbnail tried inside the larger one: copies (1.0) down to crops that
# removed 30% of the width.
MATCH_SCALES = (1.0, 0.96, 0.92, 0.88, 0.84, 0.80, 0.76, 0.72)
COARSE_GATE = 0.5
PAIR_COLUMNS = ["i", "j", "exact", "phash_distance", "cosine_distance", "match_score"]


@dataclass(frozen=True)
class Thresholds:
    """What counts as a near duplicate: pHash bits that differ <= ``phash_bits``, embedding
    cosine distance <= ``cosine`` (0: the embedding alone never decides), or crop-aware pixel
    match >= ``match``."""

    phash_bits: int = PHASH_BITS
    cosine: float = COSINE
    match: float = MATCH

    def check(self) -> Thresholds:
        if not 0 <= self.phash_bits <= CANDIDATE_PHASH_BITS:
            raise ValueError(f"phash_bits={self.phash_bits} must be in 0..{CANDIDATE_PHASH_BITS} "
                             "(candidate pairs are kept up to that)")
        if not 0.0 <= self.cosine <= 1.0:
            raise ValueError(f"cosine={self.cosine} must be in 0..1")
        if not 0.0 < self.match <= 1.0:
            raise ValueError(f"match={self.match} must be in (0, 1]")
        return self


DEFAULT_THRESHOLDS = Thresholds()


def _unit_rows(vectors: np.ndarray | None, n: int) -> tuple[np.ndarray | None, np.ndarray]:
    if vectors is None:
        return None, np.zeros(n, dtype=bool)
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) != n:
        raise ValueError(f"vectors has {len(vectors)} rows, expected {n}")
    ok = np.isfinite(vectors).all(axis=1)
    unit = np.where(ok[:, None], vectors, 0.0)
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    ok &= norms[:, 0] > 0
    return unit / np.where(norms > 0, norms, 1.0), ok


def _high_pass(grey: np.ndarray, sigma: float) -> np.ndarray:
    grey = np.asarray(grey, dtype=np.float32) / 255.0
    return grey - ndimage.gaussian_filter(grey, sigma)


def _integral(values: np.ndarray) -> np.ndarray:
    """Summed-area table with a leading row and column of zeros, float64."""
    table = np.zeros((values.shape[0] + 1, values.shape[1] + 1))
    np.cumsum(values, axis=0, dtype=np.float64, out=table[1:, 1:])
    np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
    return table


def _window_sums(table: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    return table[h:, w:] - table[:-h, w:] - table[h:, :-w] + table[:-h, :-w]


@dataclass(frozen=True)
class _Searched:
    """An image that templates are searched in, with its summed-area tables (computed once,
    reused for every template and scale)."""

    values: np.ndarray
    sums: np.ndarray
    squares: np.ndarray

    @classmethod
    def of(cls, image: np.ndarray) -> _Searched:
        image = np.asarray(image, dtype=np.float32)
        wide = image.astype(np.float64)
        return cls(image, _integral(wide), _integral(wide ** 2))


@dataclass(frozen=True)
class _Template:
    """A template with its mean removed and its norm (computed once per template)."""

    centred: np.ndarray
    norm: float

    @classmethod
    def of(cls, template: np.ndarray) -> _Template:
        centred = (template - template.mean()).astype(np.float32)
        return cls(centred, float(np.sqrt((centred.astype(np.float64) ** 2).sum())))


def _correlate(searched: _Searched, template: _Template) -> float:
    h, w = template.centred.shape
    if template.norm == 0:
        return -1.0
    values = searched.values
    rows, columns = values.shape[0] - h + 1, values.shape[1] - w + 1
    windows = np.lib.stride_tricks.as_strided(values, (rows, columns, h, w), values.strides * 2, writeable=False)
    products = np.einsum("ijkl,kl->ij", windows, template.centred, optimize=False).astype(np.float64)
    sums = _window_sums(searched.sums, (h, w))
    squares = _window_sums(searched.squares, (h, w))
    variance = np.maximum(squares - sums ** 2 / (h * w), 0.0)
    ok = variance > 1e-12
    if not ok.any():
        return -1.0
    return float((products[ok] / (np.sqrt(variance[ok]) * template.norm)).max())


def best_correlation(image: np.ndarray, template: np.ndarray) -> float:
    """The highest normalised cross-correlation of ``template`` over every position inside
    ``image`` (both 2-D float arrays, template no larger than image), in [-1, 1]."""
    return _correlate(_Searched.of(image), _Template.of(np.asarray(template, dtype=np.float32)))


class _Thumb:
    """One thumbnail prepared for :func:`match_score`: its half-size copy, both searched
    detail images, and the template details it was resized to (cached by shape)."""

    __slots__ = ("full", "half", "_searched", "_templates")

    def __init__(self, grey: np.ndarray) -> None:
        self.full = np.asarray(grey)
        self.half = np.asarray(Image.fromarray(self.full).reduce(2))
        self._searched: dict[bool, _Searched] = {}
        self._templates: dict[tuple[bool, int, int], _Template | None] = {}

    def image(self, half: bool) -> np.ndarray:
        return self.half if half else self.full

    def searched(self, half: bool) -> _Searched:
        if half not in self._searched:
            self._searched[half] = _Searched.of(_high_pass(self.image(half), 1.0 if half else 2.0))
        return self._searched[half]

    def template(self, half: bool, width: int, height: int) -> _Template | None:
        """This thumbnail resized to (height, width) as a detail image; None when flat."""
        key = (half, width, height)
        if key not in self._templates:
            resized = np.asarray(Image.fromarray(self.image(half)).resize((width, height), Image.Resampling.BILINEAR))
            detail = _high_pass(resized, 1.0 if half else 2.0)
            self._templates[key] = None if detail.std() < 1e-4 else _Template.of(detail)
        return self._templates[key]


def _score_at(big: _Thumb, small: _Thumb, scale: float, half: bool) -> float:
    height, width = big.image(half).shape
    small_shape = small.image(half).shape
    template_width = round(scale * width)
    template_height = round(template_width * small_shape[0] / small_shape[1])
    if not (6 <= template_height <= height and 6 <= template_width <= width):
        return -1.0
    detail = small.template(half, template_width, template_height)
    if detail is None:
        return -1.0
    return _correlate(big.searched(half), detail)


def match_score(a: np.ndarray | _Thumb, b: np.ndarray | _Thumb, *, scales: Sequence[float] = MATCH_SCALES) -> float:
    """How well one thumbnail is found inside the other, at any of ``scales`` of its width:
    the best normalised cross-correlation of their high-pass (detail) images, in [-1, 1].

    A copy, a rescaled or recompressed copy and a crop of 0-30% score near 1; different
    radiographs, whose broad shapes agree but whose detail does not, stay far below.
    Coarse to fine: every scale and both directions at half size, then the three best of those
    (and the plain overlay) at full size when the coarse score reaches ``COARSE_GATE``.
    a, b : uint8 thumbnails (h, w) from :func:`core.audit.fingerprints.match_thumbnail`.
    """
    a = a if isinstance(a, _Thumb) else _Thumb(a)
    b = b if isinstance(b, _Thumb) else _Thumb(b)
    coarse: list[tuple[float, int, float]] = []
    for direction, (big, small) in enumerate(((a, b), (b, a))):
        for scale in scales:
            coarse.append((_score_at(big, small, scale, True), direction, scale))
    coarse.sort(reverse=True)
    if coarse[0][0] < COARSE_GATE:
        return coarse[0][0]
    # Half size has few positions to try, so its best direction can be the wrong one: refine
    # the three best (direction, scale) pairs and the plain overlay both ways at full size.
    tried = {(direction, scale) for _, direction, scale in coarse[:3]} | {(0, 1.0), (1, 1.0)}
    best = -1.0
    for direction in (0, 1):
        big, small = (a, b) if direction == 0 else (b, a)
        for scale in sorted(s for d, s in tried if d == direction):
            best = max(best, _score_at(big, small, scale, False))
    return best


class _ThumbCache:
    """Prepared thumbnails by row, the ``size`` most recently used kept (bounded memory)."""

    def __init__(self, thumbnails: Sequence[np.ndarray | None], size: int = THUMB_CACHE) -> None:
        self.thumbnails = thumbnails
        self.size = size
        self.kept: OrderedDict[int, _Thumb] = OrderedDict()

    def __getitem__(self, row: int) -> _Thumb:
        if row in self.kept:
            self.kept.move_to_end(row)
            return self.kept[row]
        thumb = self.kept[row] = _Thumb(self.thumbnails[row])
        if len(self.kept) > self.size:
            self.kept.popitem(last=False)
        return thumb


def _nearest_pairs(points: np.ndarray, usable: np.ndarray, k: int, metric: str, found: set[tuple[int, int]],
                   *, max_distance: float = np.inf) -> None:
    """Add each usable row's ``k`` nearest other usable rows (within ``max_distance``) to
    ``found``, through core's neighbour index (:class:`core.explain.similar.SimilarCases`: exact
    up to its ``INDEX_MIN_ROWS``, faiss HNSW above)."""
    from core.explain.similar import SimilarCases

    rows = np.flatnonzero(usable)
    if len(rows) < 2 or k < 1:
        return
    k = min(k, len(rows) - 1)
    nearest, distances = SimilarCases(metric).fit(points[rows]).neighbours(k)
    keep = (nearest >= 0) & (distances <= max_distance)
    a = np.repeat(rows, k)[keep.ravel()]
    b = rows[nearest[keep]]
    for i, j in zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist(), strict=True):
        if i != j:
            found.add((i, j))


def _visiting_order(n: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    """An order to verify ``pairs`` in so that both images of a pair were prepared recently
    (hits in the bounded thumbnail cache): rows renumbered by reverse Cuthill-McKee on the pair
    graph, which puts connected rows near each other, then pairs by their lower new number."""
    if not pairs:
        return np.zeros(0, dtype=np.int64)
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    a, b = np.array(pairs, dtype=np.int64).T
    graph = csr_matrix((np.ones(2 * len(a), dtype=np.int8), (np.r_[a, b], np.r_[b, a])), shape=(n, n))
    position = np.empty(n, dtype=np.int64)
    position[reverse_cuthill_mckee(graph, symmetric_mode=True)] = np.arange(n)
    low, high = np.minimum(position[a], position[b]), np.maximum(position[a], position[b])
    return np.lexsort((high, low))


def _hash_bits(hashes: np.ndarray) -> np.ndarray:
    """64-bit hashes as (n, 64) float32 rows of 0/1: squared euclidean distance = Hamming."""
    return np.unpackbits(hashes.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1).astype(np.float32)


def candidate_pairs(
    pixel_hashes: Sequence[str | None],
    phashes: Sequence[str | None],
    *,
    descriptors: np.ndarray | None = None,
    vectors: np.ndarray | None = None,
    thumbnails: Sequence[np.ndarray | None] | None = None,
    skip: np.ndarray | None = None,
    neighbours: int = NEIGHBOURS,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Every pair (i < j) worth judging, with all its scores.

    A pair is a candidate when both rows have the same pixel hash, or one is among the
    other's ``neighbours`` nearest by pHash (counting only pHashes that differ in at most
    ``CANDIDATE_PHASH_BITS`` bits), by the centre descriptor or by the embedding. So each
    image proposes at most 3 x ``neighbours`` candidates (plus its exact copies: all pairs of
    a group up to ``neighbours`` + 1 images, each image and the next ``neighbours`` in a
    larger one, which keeps the duplicate set the same). The nearest come from core's
    neighbour index (exact search, faiss HNSW above 50,000 rows; the pHash as 64 0/1
    coordinates, whose squared euclidean distance is the Hamming distance). Each candidate
    then gets its pHash distance, embedding cosine distance and (with ``thumbnails``)
    :func:`match_score`.

    pixel_hashes, phashes : n_samples hex strings (None for rows that failed to decode).
    descriptors : (n_samples, d) centre descriptors or None. vectors : (n_samples, dim)
    embeddings or None (NaN rows are skipped). skip : (n_samples,) bool, rows left out (blank).
    Returns DataFrame with ``PAIR_COLUMNS`` (NaN where a row lacks that evidence).
    """
    n = len(pixel_hashes)
    if len(phashes) != n:
        raise ValueError(f"phashes has {len(phashes)} rows, pixel_hashes {n}")
    skip = np.zeros(n, dtype=bool) if skip is None else np.asarray(skip, dtype=bool)
    found: set[tuple[int, int]] = set()
    exact: set[tuple[int, int]] = set()
    by_hash: dict[str, list[int]] = {}
    for index, value in enumerate(pixel_hashes):
        if isinstance(value, str) and value and not skip[index]:
            by_hash.setdefault(value, []).append(index)
    for members in by_hash.values():
        # Every pair of a small group; in a large one each image and the next ``neighbours``
        # (the same duplicate set, at most neighbours x size pairs).
        for a in range(len(members)):
            for b in range(a + 1, min(len(members), a + 1 + max(neighbours, 1))):
                exact.add((members[a], members[b]))

    hashes, has_hash = hashes_as_uint64(phashes)
    has_hash &= ~skip
    _nearest_pairs(_hash_bits(hashes), has_hash, neighbours, "euclidean", found,
                   max_distance=float(np.sqrt(CANDIDATE_PHASH_BITS + 0.5)))
    unit_descriptors, has_descriptor = _unit_rows(descriptors, n)
    if unit_descriptors is not None:
        _nearest_pairs(unit_descriptors, has_descriptor & ~skip, neighbours, "cosine", found)
    unit, has_vector = _unit_rows(vectors, n)
    if unit is not None:
        _nearest_pairs(unit, has_vector & ~skip, neighbours, "cosine", found)

    pairs = sorted(found | exact)
    prepared = _ThumbCache(thumbnails) if thumbnails is not None else None
    records: list[tuple | None] = [None] * len(pairs)
    for number, index in enumerate(_visiting_order(n, pairs)):
        i, j = pairs[index]
        hash_distance = float(np.bitwise_count(hashes[i] ^ hashes[j])) if has_hash[i] and has_hash[j] else np.nan
        cosine_distance = (max(0.0, float(1.0 - unit[i] @ unit[j]))
                           if unit is not None and has_vector[i] and has_vector[j] else np.nan)
        is_exact = (i, j) in exact
        score = np.nan
        if is_exact:
            score = 1.0
        elif thumbnails is not None and thumbnails[i] is not None and thumbnails[j] is not None:
            score = match_score(prepared[i], prepared[j])
        records[index] = (i, j, is_exact, hash_distance, cosine_distance, score)
        if progress is not None and (number % 200 == 0 or number == len(pairs) - 1):
            progress(number + 1, len(pairs))
    frame = pd.DataFrame.from_records(records, columns=PAIR_COLUMNS)
    return frame.astype({"i": "int64", "j": "int64", "exact": "bool", "phash_distance": "float64",
                         "cosine_distance": "float64", "match_score": "float64"})


def select_pairs(candidates: pd.DataFrame, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """The candidate pairs that are duplicates under ``thresholds``, with a ``kind`` column:
    "exact", or "near" with ``evidence`` ("phash", "embedding" or "phash+embedding")."""
    thresholds.check()
    by_hash = candidates["phash_distance"] <= thresholds.phash_bits
    by_vector = (candidates["cosine_distance"] <= thresholds.cosine) & (thresholds.cosine > 0)
    by_match = candidates["match_score"] >= thresholds.match
    keep = candidates["exact"] | by_hash | by_vector | by_match
    chosen = candidates[keep].copy()
    names = np.array(["phash", "embedding", "pixel match"])
    flags = np.column_stack([by_hash[keep], by_vector[keep], by_match[keep]])
    chosen["kind"] = np.where(chosen["exact"], "exact", "near")
    chosen["evidence"] = ["pixel hash" if e else "+".join(names[f]) for e, f in zip(chosen["exact"], flags, strict=True)]
    return chosen.reset_index(drop=True)


def duplicate_sets(n: int, pairs: pd.DataFrame) -> np.ndarray:
    """Set id of every row (connected components of the pair graph), -1 for rows in no pair.
    Ids are 0.. in order of each set's first row."""
    if pairs.empty:
        return np.full(n, -1, dtype=np.int64)
    graph = coo_matrix((np.ones(len(pairs)), (pairs["i"].to_numpy(), pairs["j"].to_numpy())), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    in_pair = np.zeros(n, dtype=bool)
    in_pair[pairs["i"].to_numpy()] = True
    in_pair[pairs["j"].to_numpy()] = True
    out = np.full(n, -1, dtype=np.int64)
    mapping: dict[int, int] = {}
    for row in np.flatnonzero(in_pair):
        out[row] = mapping.setdefault(int(component[row]), len(mapping))
    return out


def duplicates_report(images: pd.DataFrame, candidates: pd.DataFrame,
                      thresholds: Thresholds = DEFAULT_THRESHOLDS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairs, sets) for ``images`` (needs ``image_id`` and ``patient_id``) under ``thresholds``.

    pairs : one row per duplicate pair: image and patient id of both sides, ``kind``,
        ``evidence``, both distances, ``cross_patient`` and ``set_id``.
    sets : one row per duplicate set: ``set_id, size, n_patients, patient_ids, image_ids, kinds,
        cross_patient``.
    """
    pairs = select_pairs(candidates, thresholds)
    set_ids = duplicate_sets(len(images), pairs)
    image_ids = images["image_id"].astype(str).to_numpy()
    patients = images["patient_id"].astype(str).to_numpy()
    pairs = pairs.assign(
        image_id_a=image_ids[pairs["i"]], patient_id_a=patients[pairs["i"]],
        image_id_b=image_ids[pairs["j"]], patient_id_b=patients[pairs["j"]],
        set_id=set_ids[pairs["i"]] if len(pairs) else np.zeros(0, np.int64),
    )
    pairs["cross_patient"] = pairs["patient_id_a"] != pairs["patient_id_b"]
    pairs = pairs[["set_id", "image_id_a", "patient_id_a", "image_id_b", "patient_id_b", "kind", "evidence",
                   "phash_distance", "cosine_distance", "match_score", "cross_patient", "i", "j"]]
    records = []
    for set_id in range(int(set_ids.max()) + 1 if len(set_ids) and set_ids.max() >= 0 else 0):
        members = np.flatnonzero(set_ids == set_id)
        member_patients = sorted(set(patients[members]))
        kinds = sorted(set(pairs.loc[pairs["set_id"] == set_id, "kind"]))
        records.append({"set_id": set_id, "size": len(members), "n_patients": len(member_patients),
                        "patient_ids": " | ".join(member_patients), "image_ids": " | ".join(image_ids[members]),
                        "kinds": "+".join(kinds), "cross_patient": len(member_patients) > 1})
    sets = pd.DataFrame.from_records(records, columns=["set_id", "size", "n_patients", "patient_ids",
                                                       "image_ids", "kinds", "cross_patient"])
    return pairs.reset_index(drop=True), sets
