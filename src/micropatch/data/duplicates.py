"""Near-duplicate photographs: 256-bit perceptual hashes compared by Hamming distance
(the split merges such images into one patient group; the audit reports any across
splits)."""
from __future__ import annotations

import numpy as np

# Hamming distance (of 256 bits) at or below which two fundus images are near-duplicates. Measured on the
# CLAHE green FOV crop: re-encoded (JPEG q70), 5 % rescaled, 2 % cropped copies of real IDRiD images were at
# most 38 apart; distinct images at least 64 (all 1,431 IDRiD pairs) and 58 (435 synthetic pairs).
PHASH_THRESHOLD = 48


def phash_bits(hex_hashes: list[str]) -> np.ndarray:
    """bool (N, bits) from hex perceptual hashes."""
    return np.array([[bit == "1" for bit in bin(int(h, 16))[2:].zfill(len(h) * 4)] for h in hex_hashes], bool)


def hamming_matrix(bits: np.ndarray) -> np.ndarray:
    """int (N, N) pairwise Hamming distances of bool (N, bits) hashes."""
    a = bits.astype(np.float32)
    return np.rint(a @ (1 - a).T + (1 - a) @ a.T).astype(np.int64)


def near_duplicate_pairs(rows: list[dict], threshold: int = PHASH_THRESHOLD) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every pair of manifest rows whose perceptual hashes are within threshold."""
    if len(rows) < 2:
        return []
    distance = hamming_matrix(phash_bits([r["phash"] for r in rows]))
    i, j = np.nonzero(np.triu(distance <= threshold, k=1))
    return [(int(a), int(b), int(distance[a, b])) for a, b in zip(i, j)]
