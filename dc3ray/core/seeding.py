"""Per-item seeds derived from (run seed, stable key): never from batch position or worker id."""
from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed that depends only on `seed` and `parts` (e.g. an image key and a purpose)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(str(int(seed)).encode())
    for p in parts:
        h.update(b"\x1f")
        h.update(str(p).encode("utf-8"))
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def rng_for(seed: int, *parts: object) -> np.random.Generator:
    """A numpy Generator seeded by derive_seed(seed, *parts)."""
    return np.random.default_rng(derive_seed(seed, *parts))
