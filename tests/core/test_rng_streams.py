"""Stream derivation (one SHA-256 per stream) and the blocks of many streams at base + offset."""
from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from arrival_core.errors import ArrivalError
from arrival_core.rng.errors import CounterWrapError
from arrival_core.rng.philox import philox2x64_10
from arrival_core.rng.streams import DOMAIN_SEP, blocks, stream_base, stream_bases

MF = "3f" * 32
PH = "0a" * 32
S3_FAMILY = "S3.bucket_count.v1"
S3_KEY = "merchant_id=18446744073709551557|legal_country_iso=GB|tzid=Europe/London|channel_group=card_present"
MASK = (1 << 64) - 1


def derive_by_hand(family: str, mf: str, ph: str, seed: int, scenario: str, domain_key: str) -> tuple[int, int, int]:
    """DESIGN §7 written out with struct: u32-BE length-prefixed UTF-8 fields and the seed as LE64."""
    def uer(text: str) -> bytes:
        data = text.encode("utf-8")
        return struct.pack(">I", len(data)) + data
    message = (uer("5B.arrival.rng.v1") + uer(family) + uer(mf) + uer(ph) + struct.pack("<Q", seed)
               + uer(scenario) + uer(domain_key))
    d = hashlib.sha256(message).digest()
    return tuple(struct.unpack(">Q", d[i:i + 8])[0] for i in (0, 8, 16))


def test_stream_base_follows_the_derivation_law_and_pinned_values():
    got = stream_base(S3_FAMILY, MF, PH, 42, "baseline_v1", S3_KEY)
    assert got == derive_by_hand(S3_FAMILY, MF, PH, 42, "baseline_v1", S3_KEY)
    # pinned: a change to the law (field order, encoding, byte ranges) changes every stream
    assert got == (10229811750286389658, 4484864428828122774, 16187404774931366351)
    group_key = "group_id=stress|nightlife|card_not_present|virtual|zg03|b17"
    assert stream_base("S2.latent_vector.v1", MF, PH, 0, "stress_v1", group_key) == (
        10550175727515804880, 8180181627220220059, 15747971146999237400)


@pytest.mark.parametrize("field", ["family", "mf", "ph", "seed", "scenario", "domain_key", "domain_sep"])
def test_every_field_of_the_law_changes_the_stream(field):
    args = {"family_id": S3_FAMILY, "manifest_fingerprint": MF, "parameter_hash": PH, "seed": 42,
            "scenario_id": "baseline_v1", "domain_key": S3_KEY}
    changed = dict(args)
    extra = {}
    if field == "family":
        changed["family_id"] = "S2.latent_vector.v1"
    elif field == "mf":
        changed["manifest_fingerprint"] = "3e" + MF[2:]
    elif field == "ph":
        changed["parameter_hash"] = PH[:-1] + "b"
    elif field == "seed":
        changed["seed"] = 43
    elif field == "scenario":
        changed["scenario_id"] = "stress_v1"
    elif field == "domain_key":
        changed["domain_key"] = S3_KEY.replace("card_present", "card_not_present")
    else:
        extra["domain_sep"] = DOMAIN_SEP + ".x"
    assert stream_base(**changed, **extra) != stream_base(**args)


def test_stream_bases_give_one_base_per_key_equal_to_stream_base():
    keys = [f"group_id=g{i}" for i in range(50)]
    key, hi, lo = stream_bases("S2.latent_vector.v1", MF, PH, np.uint64(7), "baseline_v1", keys)
    assert key.dtype == hi.dtype == lo.dtype == np.uint64
    for i in (0, 17, 49):
        assert (int(key[i]), int(hi[i]), int(lo[i])) == stream_base("S2.latent_vector.v1", MF, PH, 7,
                                                                     "baseline_v1", keys[i])


def test_invalid_identity_is_refused_before_hashing():
    with pytest.raises(ArrivalError) as err:
        stream_base(S3_FAMILY, "../etc", PH, 1, "baseline_v1", "k")
    assert err.value.code == "5B.IDENTITY_INVALID"
    with pytest.raises(ArrivalError):
        stream_bases(S3_FAMILY, MF, PH, -1, "baseline_v1", ["k"])


def test_blocks_are_philox_at_base_plus_offset_with_lo_as_c0():
    key, hi, lo = stream_base(S3_FAMILY, MF, PH, 42, "baseline_v1", S3_KEY)
    offsets = np.array([0, 1, 2159], dtype=np.uint64)
    x0, x1 = blocks(np.uint64(key), np.uint64(hi), np.uint64(lo), offsets)
    for j, off in enumerate(offsets.tolist()):
        total = (hi << 64 | lo) + off
        o0, o1 = philox2x64_10(np.array([total & MASK], dtype=np.uint64), np.array([total >> 64], dtype=np.uint64),
                               np.uint64(key))
        assert (int(x0[j]), int(x1[j])) == (int(o0[0]), int(o1[0]))


def test_blocks_broadcast_streams_against_offsets():
    key, hi, lo = stream_bases(S3_FAMILY, MF, PH, 42, "baseline_v1", ["a", "b", "c"])
    offsets = np.arange(5, dtype=np.uint64)
    x0, _ = blocks(key[:, None], hi[:, None], lo[:, None], offsets[None, :])
    assert x0.shape == (3, 5)
    y0, _ = blocks(key[1], hi[1], lo[1], offsets[3])
    assert int(x0[1, 3]) == int(y0)


def test_offset_carries_from_lo_into_hi():
    x0, x1 = blocks(np.uint64(5), np.uint64(10), np.uint64(MASK), np.array([1], dtype=np.uint64))
    o0, o1 = philox2x64_10(np.array([0], dtype=np.uint64), np.array([11], dtype=np.uint64), np.uint64(5))
    assert (int(x0[0]), int(x1[0])) == (int(o0[0]), int(o1[0]))


def test_a_128_bit_counter_wrap_raises_naming_the_stream_and_offset():
    with pytest.raises(CounterWrapError) as err:
        blocks(np.uint64(9), np.uint64(MASK), np.uint64(MASK - 1), np.array([0, 1, 2], dtype=np.uint64))
    assert (err.value.function, err.value.rng_key, err.value.offset, err.value.element) == ("blocks", 9, 2, 2)


@pytest.mark.parametrize("state", ["S2", "S3"])
def test_the_pipeline_maps_a_counter_wrap_to_the_state_accounting_code(state):
    from arrival_core.pipeline import rng_failure

    assert rng_failure(state, CounterWrapError("blocks", 9, 2, 2)).code == f"5B.{state}.RNG_ACCOUNTING_MISMATCH"
