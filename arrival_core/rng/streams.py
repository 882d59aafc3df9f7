"""Stream derivation (one SHA-256 per stream, DESIGN §7) and the Philox blocks of many streams at once."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numba
import numpy as np

from ..encoding import be64, le64, uer
from ..identity import validate_hex64, validate_scenario_id, validate_seed
from ..jit import JIT
from .errors import CounterWrapError
from .philox import flat_u64, philox_block
from .threads import run_sliced

DOMAIN_SEP = "5B.arrival.rng.v1"  # the policy's derivation.domain_sep; callers pass the policy value when it differs
COUPLED_SCENARIO = "*"  # the scenario field of every stream under scenario coupling common_v1 (laws §10)


def _prefix(family_id: str, manifest_fingerprint: str, parameter_hash: str, seed: int, scenario_id: str,
            domain_sep: str, coupled: bool) -> bytes:
    """The derivation message up to the domain key: UER(sep) ‖ UER(family) ‖ UER(mf) ‖ UER(ph) ‖ LE64(seed) ‖ UER(sid).

    `scenario_id` is always validated as a scenario id (so `*` itself is refused); under `coupled` the literal
    `*` is hashed in its place, which is the only way `*` enters a derivation.
    """
    if not isinstance(family_id, str) or not family_id:
        raise ValueError(f"stream derivation: family_id {family_id!r} must be a non-empty string")
    if not isinstance(coupled, bool):
        raise TypeError(f"stream derivation: coupled {coupled!r} must be a bool")
    return b"".join((
        uer(domain_sep),
        uer(family_id),
        uer(validate_hex64(manifest_fingerprint, "manifest_fingerprint")),
        uer(validate_hex64(parameter_hash, "parameter_hash")),
        le64(validate_seed(int(seed) if isinstance(seed, np.integer) else seed)),
        uer(_scenario_field(scenario_id, coupled)),
    ))


def _scenario_field(scenario_id: str, coupled: bool) -> str:
    """The scenario field of the derivation: the validated scenario id, or `*` for a coupled stream."""
    validate_scenario_id(scenario_id)
    return COUPLED_SCENARIO if coupled else scenario_id


def stream_base(family_id: str, manifest_fingerprint: str, parameter_hash: str, seed: int, scenario_id: str,
                domain_key: str, *, domain_sep: str = DOMAIN_SEP, coupled: bool = False) -> tuple[int, int, int]:
    """Return (key, counter_hi, counter_lo) of one stream: BE64 of bytes 0:8, 8:16, 16:24 of the derivation sha256.

    `coupled=True` (scenario coupling `common_v1`) derives the stream with `*` in place of the scenario id.
    """
    d = hashlib.sha256(_prefix(family_id, manifest_fingerprint, parameter_hash, seed, scenario_id, domain_sep, coupled)
                       + uer(domain_key)).digest()
    return be64(d[0:8]), be64(d[8:16]), be64(d[16:24])


def stream_bases(family_id: str, manifest_fingerprint: str, parameter_hash: str, seed: int, scenario_id: str,
                 domain_keys: Sequence[str], *, domain_sep: str = DOMAIN_SEP, coupled: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return uint64 arrays (key, counter_hi, counter_lo), one entry per domain key, as `stream_base` gives them."""
    head = hashlib.sha256(_prefix(family_id, manifest_fingerprint, parameter_hash, seed, scenario_id, domain_sep,
                                  coupled))
    digests = bytearray()
    for domain_key in domain_keys:  # one hash per stream (entity or group), never per row
        h = head.copy()
        h.update(uer(domain_key))
        digests += h.digest()
    words = np.frombuffer(bytes(digests), dtype=">u8").reshape(-1, 4).astype(np.uint64)
    return words[:, 0].copy(), words[:, 1].copy(), words[:, 2].copy()


@numba.njit(**JIT)
def _blocks_slice(key, hi, lo, off, x0, x1):  # pragma: no cover - compiled
    """Philox block at (hi, lo) + off per element (branch-free, so it vectorises); returns how many wrapped."""
    wraps = 0
    top = np.uint64(0xFFFFFFFFFFFFFFFF)
    for i in range(key.shape[0]):
        c_lo = lo[i] + off[i]
        carry = np.uint64(c_lo < lo[i])
        wraps += np.int64(carry & np.uint64(hi[i] == top))
        x0[i], x1[i] = philox_block(c_lo, hi[i] + carry, key[i])
    return wraps


def blocks(key: object, counter_hi: object, counter_lo: object, offsets: object) -> tuple[np.ndarray, np.ndarray]:
    """Return (x0, x1): the Philox block at base + offset for each (stream, offset) pair, broadcast elementwise.

    The Philox counter is (c0, c1) = (lo, hi) of the 128-bit sum; a sum past 2**128 raises CounterWrapError.
    """
    shape, (k, h, lo, off) = flat_u64(key=key, counter_hi=counter_hi, counter_lo=counter_lo, offsets=offsets)
    x0 = np.empty(k.shape[0], dtype=np.uint64)
    x1 = np.empty_like(x0)
    if sum(run_sliced(k.shape[0], lambda a, b: _blocks_slice(k[a:b], h[a:b], lo[a:b], off[a:b], x0[a:b], x1[a:b]))):
        wrapped = int(np.argmax((lo + off < lo) & (h == np.uint64(0xFFFFFFFFFFFFFFFF))))
        raise CounterWrapError("blocks", int(k[wrapped]), int(off[wrapped]), wrapped)
    return x0.reshape(shape), x1.reshape(shape)
