"""S2 latent intensity: one log-Gaussian field per (scenario, group) from Philox normals, λ_realised = λ_target · ξ."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from .errors import ArrivalError, error_code
from .rng import streams, variates

FAMILY_ID = "S2.latent_vector.v1"
MODELS = ("none", "log_gaussian_ou_v1", "log_gaussian_iid_v1")
_STRATA = ("scenario_band", "demand_class", "channel_group", "virtual_band")


@dataclass(frozen=True)
class LgcpPolicy:
    """The parsed `arrival_lgcp_config_5B`: the latent model, its σ and length-scale laws, and clipping."""

    version: str
    latent_model_id: str
    kernel_id: str
    sigma_base: Mapping[str, float]
    sigma_demand: Mapping[str, float]
    sigma_channel: Mapping[str, float]
    sigma_virtual: Mapping[str, float]
    sigma_bounds: tuple[float, float]
    length_base: Mapping[str, float]
    length_demand: Mapping[str, float]
    length_bounds: tuple[float, float]
    min_factor: float
    max_factor: float
    lambda_max: float | None
    emit_latent_field: bool


def parse_lgcp_policy(doc: Mapping) -> LgcpPolicy:
    """Read a schema-valid LGCP config; refuse what the schema cannot express (bounds out of order, unknown model)."""
    sigma, length, clip = doc["sigma"], doc["length_scale_buckets"], doc["clipping"]
    policy = LgcpPolicy(
        version=doc["version"],
        latent_model_id=doc["latent_model_id"],
        kernel_id=doc["kernel_id"],
        sigma_base=dict(sigma["base_by_scenario_band"]),
        sigma_demand=dict(sigma["demand_class_multipliers"]),
        sigma_channel=dict(sigma["channel_group_multipliers"]),
        sigma_virtual=dict(sigma["virtual_band_multipliers"]),
        sigma_bounds=(float(sigma["bounds"][0]), float(sigma["bounds"][1])),
        length_base=dict(length["base_by_scenario_band"]),
        length_demand=dict(length["demand_class_multipliers"]),
        length_bounds=(float(length["bounds"][0]), float(length["bounds"][1])),
        min_factor=float(clip["min_factor"]),
        max_factor=float(clip["max_factor"]),
        lambda_max=None if clip["lambda_max"] is None else float(clip["lambda_max"]),
        emit_latent_field=bool(doc["diagnostics"]["emit_latent_field_diagnostic"]),
    )
    problems = []
    if policy.latent_model_id not in MODELS:
        problems.append(f"latent_model_id {policy.latent_model_id!r} is not one of {list(MODELS)}")
    for name, (low, high) in (("sigma.bounds", policy.sigma_bounds), ("length_scale_buckets.bounds", policy.length_bounds),
                              ("clipping.min_factor/max_factor", (policy.min_factor, policy.max_factor))):
        if not low <= high:
            problems.append(f"{name}: low {low} exceeds high {high}")
    if problems:
        raise ArrivalError(error_code("S2", "LGCP_CONFIG_INVALID"), "arrival_lgcp_config_5B: " + "; ".join(problems),
                           policy="arrival_lgcp_config_5B")
    return policy


def group_parameters(grouping: pl.DataFrame, policy: LgcpPolicy) -> pl.DataFrame:
    """One row per group, sorted by group_id: its strata, σ, length scale L (buckets) and φ = exp(-1/L)."""
    groups = grouping.group_by("group_id").agg(
        *[pl.col(c).first() for c in _STRATA], pl.len().alias("members"),
        pl.max_horizontal([pl.col(c).n_unique() for c in _STRATA]).alias("_strata_seen"),
    ).sort("group_id")
    mixed = groups.filter(pl.col("_strata_seen") > 1)
    if mixed.height:
        raise ArrivalError(error_code("S2", "DOMAIN_ALIGN_FAILED"),
                           f"s1_grouping_5B: group {mixed['group_id'][0]!r} mixes strata of {list(_STRATA)}",
                           group_id=mixed["group_id"][0])

    def mapped(column: str, table: Mapping[str, float]) -> pl.Expr:
        return pl.col(column).replace_strict(dict(table), return_dtype=pl.Float64)

    sigma = (mapped("scenario_band", policy.sigma_base) * mapped("demand_class", policy.sigma_demand)
             * mapped("channel_group", policy.sigma_channel) * mapped("virtual_band", policy.sigma_virtual))
    length = mapped("scenario_band", policy.length_base) * mapped("demand_class", policy.length_demand)
    try:
        params = groups.drop("_strata_seen").with_columns(
            sigma.clip(*policy.sigma_bounds).alias("sigma"),
            length.clip(*policy.length_bounds).alias("length_scale_buckets"),
        ).with_columns((-1.0 / pl.col("length_scale_buckets")).exp().alias("phi"))
    except pl.exceptions.InvalidOperationError as exc:  # a stratum value the policy has no multiplier for
        raise ArrivalError(error_code("S2", "LGCP_CONFIG_INVALID"),
                           f"arrival_lgcp_config_5B has no multiplier for a stratum of s1_grouping_5B: {exc}",
                           policy="arrival_lgcp_config_5B") from exc
    return params


@dataclass(frozen=True)
class LatentField:
    """Per-group latent values Z (G×H), factors ξ, clipping flags and the RNG event envelope of each group."""

    group_id: tuple[str, ...]
    sigma: np.ndarray
    length_scale: np.ndarray
    latent: np.ndarray
    factor: np.ndarray
    clipped: np.ndarray
    rng_key: np.ndarray
    counter_before: tuple[np.ndarray, np.ndarray]  # (hi, lo) of block 0
    counter_after: tuple[np.ndarray, np.ndarray]  # (hi, lo) one past the last block

    @property
    def buckets(self) -> int:
        return self.latent.shape[1]

    @property
    def events(self) -> int:
        return len(self.rng_key)


def latent_normals(key: np.ndarray, hi: np.ndarray, lo: np.ndarray, buckets: int) -> np.ndarray:
    """Standard normals (G×H): block j of each group's stream gives z_j by Box–Muller (cosine) of (x0, x1)."""
    groups = len(key)
    offsets = np.tile(np.arange(buckets, dtype=np.uint64), groups)
    x0, x1 = streams.blocks(np.repeat(key, buckets), np.repeat(hi, buckets), np.repeat(lo, buckets), offsets)
    return variates.box_muller(x0, x1).reshape(groups, buckets)


def latent_gaussian(model_id: str, sigma: np.ndarray, phi: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Z (G×H): OU/AR(1) `Z_0 = σ z_0, Z_t = φ Z_{t-1} + σ √(1-φ²) z_t`, or iid `Z_t = σ z_t`."""
    sigma = sigma[:, None]
    if model_id == "log_gaussian_iid_v1":
        return sigma * normals
    innovation = sigma * np.sqrt(1.0 - phi * phi)[:, None] * normals
    latent = np.empty_like(normals)
    latent[:, 0] = sigma[:, 0] * normals[:, 0]
    for t in range(1, normals.shape[1]):  # over buckets; the body is a vector over groups
        latent[:, t] = phi * latent[:, t - 1] + innovation[:, t]
    return latent


def sample_latent(
    params: pl.DataFrame,
    policy: LgcpPolicy,
    buckets: int,
    *,
    manifest_fingerprint: str,
    parameter_hash: str,
    seed: int,
    scenario_id: str,
    domain_sep: str = streams.DOMAIN_SEP,
) -> LatentField:
    """Draw every group's field over the H buckets (under `none`: Z ≡ 0, σ = 0, ξ ≡ 1 and no RNG event)."""
    group_ids = tuple(params["group_id"].to_list())
    length = params["length_scale_buckets"].to_numpy()
    groups = len(group_ids)
    if policy.latent_model_id == "none":
        empty = np.zeros(0, dtype=np.uint64)
        return LatentField(group_ids, np.zeros(groups), length, np.zeros((groups, buckets)),
                           np.ones((groups, buckets)), np.zeros((groups, buckets), dtype=bool),
                           empty, (empty, empty), (empty, empty))
    sigma = params["sigma"].to_numpy()
    key, hi, lo = streams.stream_bases(FAMILY_ID, manifest_fingerprint, parameter_hash, seed, scenario_id,
                                       [f"group_id={g}" for g in group_ids], domain_sep=domain_sep)
    after_hi, after_lo = _counter_after(hi, lo, buckets, group_ids)
    latent = latent_gaussian(policy.latent_model_id, sigma, params["phi"].to_numpy(),
                             latent_normals(key, hi, lo, buckets))
    factor = latent_factors(latent, sigma, policy)
    return LatentField(group_ids, sigma, length, latent, factor, factor != np.exp(latent - 0.5 * (sigma * sigma)[:, None]),
                       key, (hi, lo), (after_hi, after_lo))


def latent_factors(latent: np.ndarray, sigma: np.ndarray, policy: LgcpPolicy) -> np.ndarray:
    """ξ = clip(exp(Z − σ²/2), min_factor, max_factor): mean one before clipping."""
    return np.clip(np.exp(latent - 0.5 * (sigma * sigma)[:, None]), policy.min_factor, policy.max_factor)


def _counter_after(hi: np.ndarray, lo: np.ndarray, blocks: int, group_ids: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """base + blocks with carry; a 128-bit wrap anywhere in a stream is an accounting failure (abort_on_wrap)."""
    after_lo = lo + np.uint64(blocks)
    carry = after_lo < lo
    wrapped = carry & (hi == np.uint64(2**64 - 1))
    if wrapped.any():
        g = group_ids[int(np.argmax(wrapped))]
        raise ArrivalError(error_code("S2", "RNG_ACCOUNTING_MISMATCH"),
                           f"the latent stream of group {g!r} wraps the 128-bit Philox counter", group_id=g)
    return hi + carry.astype(np.uint64), after_lo


def realise(lambda_target: np.ndarray, entity_group: np.ndarray, field: LatentField,
            lambda_max: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Return (ξ, λ_realised) for whole entities in bucket order: row e·H + t takes ξ[group(e), t]."""
    factor = field.factor[entity_group].ravel()
    realised = lambda_target * factor
    if lambda_max is not None:
        np.minimum(realised, lambda_max, out=realised)
    return factor, realised
