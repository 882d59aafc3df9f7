"""The row-group checks of S2's latent field (`LatentCheck`): its rows, then its replay and corridor over the
whole field.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import entity_grid, latent, pipeline
from . import latent_kernels
from .context import CheckContext, CheckResult
from .intensity import (
    latent_corridor,
    merge_results,
    spectral_corridor,
    stationary_projections,
)
from .rows import LATENT, Found, RowGroupCheck, Rows
from .scanning import numbers
from .specs import (
    DOMAIN_COMPLETE,
    LATENT_CORRIDOR,
    NUMERIC_VALID,
    PRIMARY_KEY_UNIQUE,
    RNG_REPLAY,
    SCHEMA_VALID,
)


@dataclass
class LatentFound(Found):
    """What one row group of the latent field showed."""

    domain: CheckResult = field(default_factory=CheckResult)
    numeric: CheckResult = field(default_factory=CheckResult)
    factor_not_one: bool = False  # some ξ ≠ 1 (what latent_model_id none forbids)


class LatentCheck(RowGroupCheck):
    """s2_latent_field_5B: one row per (group, bucket) in order with the policy's σ and L and ξ = clip(exp(Z − σ²/2));
    from the stream also ξ the one applied to λ_realised; then Z and ξ of the sampled groups replayed by the
    reference and the latent corridor, over the whole field (Z kept as groups × buckets, ξ for the replayed groups
    only)."""

    dataset_id = LATENT

    def __init__(self, ctx: CheckContext, applied: np.ndarray | None = None) -> None:
        super().__init__(ctx)
        d, lgcp = self.ctx.domain, self.ctx.lgcp
        g, h = len(d.group_ids), d.buckets
        self.applied = applied  # ξ per (group, bucket) applied to λ_realised (from the stream; None from files)
        self.sigma = np.zeros(g) if lgcp.latent_model_id == "none" else self.ctx.params["sigma"].to_numpy()
        self.length = self.ctx.params["length_scale_buckets"].to_numpy()
        # ξ is kept only for the groups a replay compares (the reference's sample; every group under `full`).
        kept = np.arange(g) if self.ctx.replay == "full" else self.ctx.sample(g, full=False)
        self.slot = np.full(g, -1)
        self.slot[kept] = np.arange(len(kept))
        self.latent, self.factor = np.zeros((g, h)), np.zeros((len(kept), h))

    def examine(self, rows: Rows) -> LatentFound:
        d, lgcp, table, start = self.ctx.domain, self.ctx.lgcp, rows.rows, rows.start
        g, h, n = len(d.group_ids), d.buckets, rows.rows.num_rows
        found = LatentFound(n)
        self.add_values(rows, found.schema)
        misplaced = f"rows from {start} are not one per (group_id, bucket) in writer order"
        if start + n > g * h or table["bucket_index"].null_count:
            found.domain.fail(misplaced)
            return found
        g0, b0 = divmod(start, h)
        bad, first, not_one = latent_kernels.latent_mismatches(
            b0, h, g0, entity_grid.dictionary_indices(table["group_id"], d.dictionaries["group_id"]),
            numbers(table, "bucket_index"), numbers(table, "latent_std"), numbers(table, "length_scale_buckets"),
            numbers(table, "latent_value"), numbers(table, "lambda_random_component"), numbers(table, "clipped"),
            None if self.applied is None else self.applied.ravel()[start:start + n], self.sigma, self.length,
            lgcp.min_factor, lgcp.max_factor, self.slot, self.latent, self.factor)
        if bad[0]:
            found.domain.fail(misplaced)
            return found
        for name, value in pipeline.identity_values(self.ctx.identity, table.column_names).items():
            if rows.extremes.get(name) == (value, value):
                continue  # the footer's statistics state every value: no row differs
            if (row := entity_grid.first_mismatch(table[name], value)) is not None:
                found.domain.fail(f"{name} is {table[name][row]} at row {start + row}, the partition's is {value!r}")
                return found
        for label, count, i in zip(latent_kernels.RULES[1:], bad[1:], first[1:]):
            if count:
                group, bucket = divmod(start + int(i), h)
                found.numeric.fail(f"{int(count)} row(s): {label}",
                                   {"group_id": d.group_ids[group], "bucket_index": bucket})
        found.factor_not_one = not_one > 0
        return found

    def results(self) -> dict[str, CheckResult]:
        ctx, lgcp, d = self.ctx, self.ctx.lgcp, self.ctx.domain
        g, h = len(d.group_ids), d.buckets
        found = self.found()
        rows = sum(f.rows for f in found)
        domain, key = CheckResult(), CheckResult(facts={"by": "(group_id, bucket) order against the grouping's "
                                                              "sorted group ids"})
        for f in found:
            domain = merge_results(domain, f.domain)
        if rows != g * h or list(d.group_ids) != sorted(set(d.group_ids)):
            domain.fail(f"{rows} rows; expected {g} groups × {h} buckets in (group_id, bucket) order")
        if domain.problems:
            key.fail("the rows are not one per (group_id, bucket) in writer order (see domain_complete)")
        results = {SCHEMA_VALID: self.schema_result(rows, [f.schema for f in found]), PRIMARY_KEY_UNIQUE: key}
        if domain.problems:
            return results | {name: domain for name in (DOMAIN_COMPLETE, NUMERIC_VALID, RNG_REPLAY, LATENT_CORRIDOR)}
        domain.facts |= {"groups": g, "buckets": h}
        numeric = merge_results(*(f.numeric for f in found))
        latent_z, factor = self.latent, self.factor
        replay, corridor = CheckResult(), CheckResult()
        replays = ctx.group_replays()
        for by, chosen, fresh in replays:  # the reference's sample, and the engine's every group under `full`
            bad = (latent_z[chosen] != fresh.latent) | (factor[self.slot[chosen]] != fresh.factor)
            if bad.any():
                gi, t = np.argwhere(bad)[0]
                replay.fail(f"{int(bad.sum())} latent value(s) do not replay by the {by}",
                            {"group_id": d.group_ids[chosen[gi]], "bucket_index": int(t)})
        replay.facts |= {"groups_replayed": max(len(chosen) for _, chosen, _ in replays),
                         "groups_replayed_by_reference": len(replays[0][1]), "mode": ctx.replay}
        if lgcp.latent_model_id == "none":
            corridor.facts["model"] = "none (ξ ≡ 1)"
            if (latent_z != 0).any() or any(f.factor_not_one for f in found):
                corridor.fail("latent_model_id none but Z ≠ 0 or ξ ≠ 1")
        else:
            _latent_corridor_result(ctx, latent_z, self.sigma, corridor)
        return results | {DOMAIN_COMPLETE: domain, NUMERIC_VALID: numeric, RNG_REPLAY: replay,
                          LATENT_CORRIDOR: corridor}


def _latent_corridor_result(ctx: CheckContext, latent_z: np.ndarray, sigma: np.ndarray, corridor: CheckResult) -> None:
    """The latent corridor of the whole field Z (groups × buckets) into `corridor`."""
    lgcp, g, h = ctx.lgcp, latent_z.shape[0], latent_z.shape[1]
    if lgcp.latent_model_id == latent.STATIONARY:
        stats = spectral_corridor(stationary_projections(latent_z, sigma, ctx.params, lgcp, h, coupled=ctx.rng.coupled),
                                  ctx.corridors["false_alarm"]) | {"model": f"projected {lgcp.kernel_id}"}
    else:
        phi = np.zeros(g) if lgcp.latent_model_id == "log_gaussian_iid_v1" else ctx.params["phi"].to_numpy()
        stats = latent_corridor(latent_z, sigma, phi, ctx.corridors["false_alarm"])
    corridor.facts |= {k: v for k, v in stats.items() if k != "passed"}
    if not stats["variance_ok"]:
        corridor.fail(f"pooled Σ Z²/σ² = {stats['sum_sq']:.6g} outside [{stats['sum_sq_low']:.6g}, "
                      f"{stats['sum_sq_high']:.6g}] (σ̂/σ = {stats['sigma_ratio']:.4f})")
    if not stats.get("tilt_ok", True):
        corridor.fail(f"spectral tilt {stats['tilt_stat']:.6g} outside ±{stats['tilt_bound']:.6g}: the variance is "
                      f"not spread over the directions as the kernel's eigenvalues say (wrong L or kernel)")
    if not stats.get("lag1_ok", True):
        corridor.fail(f"lag-1 martingale statistic {stats['lag1_stat']:.6g} outside ±{stats['lag1_bound']:.6g} "
                      f"(ρ̂ = {stats['lag1_estimate']:.4f}, mean φ = {stats['phi_mean']:.4f})")
