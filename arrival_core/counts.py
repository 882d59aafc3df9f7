"""S3 bucket counts: one Philox block per drawing (entity, bucket) at its stream's base + bucket_index."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numba
import numpy as np
import polars as pl

from .errors import ArrivalError, error_code
from .jit import JIT
from .rng import variates
from .rng.philox import philox_block
from .rng.threads import run_sliced
from .strata import StratumLaw, parse_law

FAMILY_ID = "S3.bucket_count.v1"
LAWS = ("poisson", "nb2")
DRAWS_PER_EVENT = {"poisson": 1, "nb2": 2}


@dataclass(frozen=True)
class CountPolicy:
    """The parsed `arrival_count_config_5B`: the count law, the zero threshold, the cap and the NB2 κ law."""

    version: str
    law: str
    lambda_zero_eps: float
    max_count: int
    kappa: StratumLaw  # the NB2 shape: base by scenario band × demand-class multiplier, clipped

    @property
    def draws_per_event(self) -> int:
        return DRAWS_PER_EVENT[self.law]


def parse_count_policy(doc: Mapping) -> CountPolicy:
    """Read a schema-valid count config; refuse what the schema cannot express (κ bounds out of order)."""
    kappa = parse_law(doc["nb2"], ("demand_class",), base="kappa_base_by_scenario_band", bounds="kappa_bounds")
    policy = CountPolicy(doc["version"], doc["count_law_id"], float(doc["lambda_zero_eps"]),
                         int(doc["max_count_per_bucket"]), kappa)
    if policy.law not in LAWS or not kappa.bounds[0] <= kappa.bounds[1]:
        raise ArrivalError(error_code("S3", "COUNT_CONFIG_INVALID"),
                           f"arrival_count_config_5B: count_law_id {policy.law!r} must be one of {list(LAWS)} and "
                           f"kappa_bounds {list(kappa.bounds)} must be ordered", policy="arrival_count_config_5B")
    return policy


def entity_kappa(grouping: pl.DataFrame, policy: CountPolicy) -> np.ndarray:
    """NB2 shape κ = clamp(κ_base[band] · m_demand, bounds) per grouping row (entity order)."""
    try:
        kappa = grouping.select(policy.kappa.expr()).to_series()
    except pl.exceptions.InvalidOperationError as exc:
        raise ArrivalError(error_code("S3", "COUNT_CONFIG_INVALID"),
                           f"arrival_count_config_5B has no κ for a stratum of s1_grouping_5B: {exc}",
                           policy="arrival_count_config_5B") from exc
    return kappa.to_numpy()


def domain_keys(entities: pl.DataFrame) -> list[str]:
    """The S3 stream domain key of each entity, exactly as the RNG policy's template spells it."""
    return entities.select(
        pl.format("merchant_id={}|legal_country_iso={}|tzid={}|channel_group={}",
                  "merchant_id", "legal_country_iso", "tzid", "channel_group")
    ).to_series().to_list()


@dataclass(frozen=True)
class CountDraws:
    """Counts of a set of rows, and the envelope of each RNG event (rows with μ > eps, in row order)."""

    count: np.ndarray  # Int64, per row
    capped: np.ndarray  # bool, per row
    event_rows: np.ndarray  # positions of the rows that drew (μ > lambda_zero_eps), ascending
    key: np.ndarray  # per event
    before_hi: np.ndarray
    before_lo: np.ndarray
    after_hi: np.ndarray
    after_lo: np.ndarray


@numba.njit(**JIT)
def _count_blocks_slice(rows, entity, bucket, key, hi, lo, before_hi, before_lo, x0, x1, wrapped):  # pragma: no cover
    top = np.uint64(0xFFFFFFFFFFFFFFFF)
    for j in range(rows.shape[0]):
        i = rows[j]
        e = entity[i]
        c_lo = lo[e] + np.uint64(bucket[i])
        carry = c_lo < lo[e]
        c_hi = hi[e] + np.uint64(1) if carry else hi[e]
        wrapped[j] = (carry and hi[e] == top) or (c_lo == top and c_hi == top)  # base + b or its successor wraps
        before_hi[j] = c_hi
        before_lo[j] = c_lo
        x0[j], x1[j] = philox_block(c_lo, c_hi, key[e])


def _count_blocks(rows, entity, bucket, key, hi, lo, before_hi, before_lo, x0, x1, wrapped) -> None:
    """Block at the row's stream base + bucket for each drawing row (the RNG core's Philox round function)."""
    run_sliced(rows.shape[0], lambda a, b: _count_blocks_slice(rows[a:b], entity, bucket, key, hi, lo, before_hi[a:b],
                                                               before_lo[a:b], x0[a:b], x1[a:b], wrapped[a:b]))


def draw_counts(
    mu: np.ndarray,
    entity: np.ndarray,
    bucket: np.ndarray,
    bases: tuple[np.ndarray, np.ndarray, np.ndarray],
    kappa: np.ndarray | None,
    policy: CountPolicy,
) -> CountDraws:
    """Draw N per row from μ: Poisson `PoissonInv(μ, u(x0))`, or NB2 `PoissonInv(GammaInv(κ, u(x0))·μ/κ, u(x1))`.

    `entity` indexes each row's stream in `bases` = (key, hi, lo) and, for NB2, its κ; `bucket` is the block offset.
    """
    rows = np.flatnonzero(mu > policy.lambda_zero_eps)
    key, hi, lo = (np.ascontiguousarray(b, dtype=np.uint64) for b in bases)
    n_events = len(rows)
    before_hi, before_lo, x0, x1 = (np.empty(n_events, dtype=np.uint64) for _ in range(4))
    wrapped = np.empty(n_events, dtype=np.bool_)
    _count_blocks(rows, np.ascontiguousarray(entity), np.ascontiguousarray(bucket), key, hi, lo,
                  before_hi, before_lo, x0, x1, wrapped)
    if wrapped.any():
        raise ArrivalError(error_code("S3", "RNG_ACCOUNTING_MISMATCH"),
                           f"the count stream of row {int(rows[np.argmax(wrapped)])} wraps the 128-bit Philox counter")
    m = mu[rows]
    if policy.law == "poisson":
        n = variates.poisson_inv(m, variates.u01(x0))
    else:
        k = kappa[entity[rows]]
        n = variates.poisson_inv(variates.gamma_inv(k, variates.u01(x0)) * m / k, variates.u01(x1))  # (G·μ)/κ
    count = np.zeros(len(mu), dtype=np.int64)
    capped = np.zeros(len(mu), dtype=bool)
    count[rows] = np.minimum(n, policy.max_count)
    capped[rows] = n > policy.max_count
    after_lo = before_lo + np.uint64(1)
    after_hi = before_hi + (after_lo == 0).astype(np.uint64)
    return CountDraws(count, capped, rows, key[entity[rows]], before_hi, before_lo, after_hi, after_lo)
