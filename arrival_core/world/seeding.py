"""Deterministic random sources of the world generator: one independent numpy generator per named purpose."""
from __future__ import annotations

import hashlib

import numpy as np

from ..encoding import uer

RNG_DOMAIN = "arrival.world.rng.v1"


def generator(world_key: str, purpose: str) -> np.random.Generator:
    """Return a PCG64 generator keyed by sha256(domain ‖ world key ‖ purpose): purposes never share draws."""
    digest = hashlib.sha256(uer(RNG_DOMAIN) + uer(world_key) + uer(purpose)).digest()
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int.from_bytes(digest, "big"))))


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64: a bijection, so distinct inputs give distinct, spread outputs."""
    z = x.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z
