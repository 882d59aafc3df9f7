"""S3 count law: policy parsing, κ per entity, stream domain keys, and draws re-derived from Philox by hand."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import yaml

from arrival_core import contracts, counts
from arrival_core.errors import ArrivalError
from arrival_core.rng import philox, variates

TOP = 2**64 - 1


def _policy(**changes) -> counts.CountPolicy:
    doc = yaml.safe_load((contracts.DEFAULT_CONFIG_DIR / "arrival_count_config_5B.yaml").read_text())
    for path, value in changes.items():
        node = doc
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return counts.parse_count_policy(doc)


def _bases(*streams: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    key, hi, lo = zip(*streams)
    return tuple(np.array(v, dtype=np.uint64) for v in (key, hi, lo))


def _by_hand(key: int, hi: int, lo: int, bucket: int) -> tuple[np.uint64, np.uint64, int, int]:
    """Philox block at (hi, lo) + bucket with Python integers: the counter is a 128-bit number."""
    counter = ((hi << 64) | lo) + bucket
    c_hi, c_lo = counter >> 64, counter & TOP
    x0, x1 = philox.philox2x64_10(np.uint64(c_lo), np.uint64(c_hi), np.uint64(key))
    return x0, x1, c_hi, c_lo


def test_shipped_count_config_parses_to_its_values():
    p = _policy()
    assert (p.law, p.lambda_zero_eps, p.max_count, p.draws_per_event) == ("poisson", 1e-12, 1_000_000, 1)
    assert (p.kappa.base["stress"], p.kappa.bounds) == (10, (0.5, 200.0))


def test_kappa_bounds_out_of_order_are_count_config_invalid():
    with pytest.raises(ArrivalError) as err:
        _policy(nb2__kappa_bounds=[200, 0.5])
    assert err.value.code == "5B.S3.COUNT_CONFIG_INVALID"


def test_kappa_is_band_base_times_demand_multiplier_clamped():
    grouping = pl.DataFrame({"scenario_band": ["baseline", "stress", "stress"],
                             "demand_class": ["office_hours", "nightlife", "online_24h"]})
    kappa = counts.entity_kappa(grouping, _policy(nb2__kappa_bounds=[5.5, 200]))
    assert kappa.tolist() == [pytest.approx(37.5), 5.5, pytest.approx(12.0)]


def test_domain_key_spells_the_policy_template():
    entities = pl.DataFrame({"merchant_id": [18446744073709551615], "legal_country_iso": ["GB"],
                             "tzid": ["Europe/London"], "channel_group": ["card_present"]},
                            schema_overrides={"merchant_id": pl.UInt64})
    assert counts.domain_keys(entities) == [
        "merchant_id=18446744073709551615|legal_country_iso=GB|tzid=Europe/London|channel_group=card_present"]


def test_poisson_draws_use_block_base_plus_bucket_and_skip_zero_intensity():
    streams_ = [(11, 5, TOP - 1), (22, 7, 100)]  # the first stream carries into hi at bucket 2
    mu = np.array([0.0, 3.5, 1e-13, 250.0, 0.7, 1e-12])
    entity = np.array([0, 0, 0, 0, 1, 1])
    bucket = np.array([0, 1, 2, 3, 0, 1], dtype=np.int32)
    draws = counts.draw_counts(mu, entity, bucket, _bases(*streams_), None, _policy())
    assert draws.event_rows.tolist() == [1, 3, 4]
    assert draws.count[[0, 2, 5]].tolist() == [0, 0, 0]
    for event, row in enumerate(draws.event_rows):
        key, hi, lo = streams_[entity[row]]
        x0, _, c_hi, c_lo = _by_hand(key, hi, lo, int(bucket[row]))
        assert (draws.key[event], draws.before_hi[event], draws.before_lo[event]) == (key, c_hi, c_lo)
        after = ((c_hi << 64) | c_lo) + 1
        assert (draws.after_hi[event], draws.after_lo[event]) == (after >> 64, after & TOP)
        assert draws.count[row] == variates.poisson_inv(mu[row], variates.u01(x0))
    assert draws.before_hi[1] == 6  # 2**64 - 1 + 3 carried


def test_nb2_draws_mix_a_gamma_quantile_into_the_poisson_mean():
    policy = _policy(count_law_id="nb2")
    mu = np.array([4.0, 40.0, 400.0])
    kappa = np.array([0.5, 25.0])
    entity = np.array([0, 1, 1])
    bucket = np.array([7, 8, 9], dtype=np.int32)
    draws = counts.draw_counts(mu, entity, bucket, _bases((3, 0, 0), (4, 1, 2)), kappa, policy)
    assert policy.draws_per_event == 2
    for row, (key, hi, lo) in enumerate([(3, 0, 0), (4, 1, 2), (4, 1, 2)]):
        x0, x1, _, _ = _by_hand(key, hi, lo, int(bucket[row]))
        k = kappa[entity[row]]
        gamma = variates.gamma_inv(k, variates.u01(x0)) * mu[row] / k
        assert draws.count[row] == variates.poisson_inv(gamma, variates.u01(x1))


def test_draws_above_the_cap_are_capped_and_flagged():
    mu = np.array([500.0, 0.5])
    draws = counts.draw_counts(mu, np.array([0, 0]), np.array([0, 1], dtype=np.int32), _bases((1, 2, 3)), None,
                               _policy(max_count_per_bucket=100))
    assert draws.count[0] == 100 and draws.capped.tolist() == [True, False]


def test_a_count_stream_that_wraps_the_counter_is_rng_accounting_mismatch():
    with pytest.raises(ArrivalError) as err:
        counts.draw_counts(np.array([1.0]), np.array([0]), np.array([5], dtype=np.int32), _bases((1, TOP, TOP - 2)),
                           None, _policy())
    assert err.value.code == "5B.S3.RNG_ACCOUNTING_MISMATCH"
