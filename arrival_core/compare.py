"""Compare two scenarios' published bucket counts for one seed: totals, their difference and its standard error.

Under scenario coupling `common_v1` both scenarios draw from the same normals and uniforms (laws §10), so the
per-entity differences carry the scenarios' effect with little independent noise and the standard error below is
much smaller than under `independent_v1`. Files are read through `pipeline`; `compare_counts` is pure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from . import pipeline
from .errors import IDENTITY_INVALID, ArrivalError, error_code
from .grouping import ENTITY_KEYS
from .identity import Identity, PartitionKey
from .rng import ledger
from .store import Store


@dataclass(frozen=True)
class CountDifference:
    """What two count tables of one seed say about each other (pure result of `compare_counts`).

    `totals` are Σ count_N over every row of each table; `difference` = totals[1] − totals[0]. Per entity e
    present in both, T_e is Σ count_N over its buckets and d_e = T_e(b) − T_e(a); `paired_difference` = Σ d_e
    over those `entities` (n) and `standard_error` = √(n · var(d_e)) with the sample variance (ddof 1), the
    standard error of Σ d_e when the entities' differences are independent draws of one law (None for n < 2).
    `unmatched` counts the entities of a only and of b only (they enter the totals, not the paired sum).
    """

    totals: tuple[int, int]
    difference: int
    paired_difference: int
    standard_error: float | None
    entities: int
    unmatched: tuple[int, int]

    @property
    def z(self) -> float | None:
        """paired_difference / standard_error (None when the error is 0 or undefined)."""
        if not self.standard_error:
            return None
        return self.paired_difference / self.standard_error


@dataclass(frozen=True)
class ScenarioComparison:
    """`compare_scenarios`: the partitions compared, the RNG coupling they were drawn under, and the numbers."""

    seed: int
    parameter_hash: str
    manifest_fingerprint: str
    scenarios: tuple[str, str]
    scenario_coupling: str
    counts: CountDifference

    @property
    def coupled(self) -> bool:
        """True when the RNG policy couples the scenarios (`common_v1`)."""
        return self.scenario_coupling == ledger.COMMON

    def as_dict(self) -> dict:
        """A JSON-ready summary (for the CLI)."""
        c = self.counts
        return {"seed": self.seed, "parameter_hash": self.parameter_hash,
                "manifest_fingerprint": self.manifest_fingerprint, "scenarios": list(self.scenarios),
                "scenario_coupling": self.scenario_coupling, "coupled": self.coupled,
                "totals": dict(zip(self.scenarios, c.totals, strict=True)), "difference": c.difference,
                "paired_difference": c.paired_difference, "standard_error": c.standard_error, "z": c.z,
                "entities": c.entities, "unmatched": dict(zip(self.scenarios, c.unmatched, strict=True))}


def compare_counts(counts_a: pl.DataFrame, counts_b: pl.DataFrame) -> CountDifference:
    """Totals of `count_N`, their difference, and the paired per-entity difference with its standard error.

    Each frame needs the entity keys and `count_N` (any row order; an entity's rows are summed over its buckets).
    """
    keys = list(ENTITY_KEYS)
    per_entity = [frame.group_by(keys).agg(pl.col("count_N").cast(pl.Int64).sum().alias(f"t{i}"))
                  for i, frame in enumerate((counts_a, counts_b))]
    totals = tuple(int(frame["count_N"].cast(pl.Int64).sum()) for frame in (counts_a, counts_b))
    paired = per_entity[0].join(per_entity[1], on=keys, how="inner")
    diff = (paired["t1"] - paired["t0"]).cast(pl.Float64)
    n = paired.height
    variance = diff.var(ddof=1) if n >= 2 else None
    return CountDifference(
        totals=(totals[0], totals[1]),
        difference=totals[1] - totals[0],
        paired_difference=int((paired["t1"] - paired["t0"]).sum()) if n else 0,
        standard_error=None if variance is None else math.sqrt(n * float(variance)),
        entities=n,
        unmatched=(per_entity[0].height - n, per_entity[1].height - n),
    )


def compare_scenarios(store: Store, *, seed: int | str, scenario_a: str, scenario_b: str,
                      parameter_hash: str | None = None) -> ScenarioComparison:
    """Compare the published `s3_bucket_counts_5B` of two scenarios of one seed (the partitions of the current
    policies' parameter_hash, or of `parameter_hash` when given); the coupling is read from the sealed RNG policy.

    Two equal scenarios are `5B.IDENTITY_INVALID`; a missing or unreadable count file is `5B.S3.IO_READ_FAILED`
    naming it.
    """
    idents = [pipeline.resolve_identity(store, PartitionKey(seed, sid), state="S3", parameter_hash=parameter_hash)
              for sid in (scenario_a, scenario_b)]
    if idents[0].scenario_id == idents[1].scenario_id:
        raise ArrivalError(IDENTITY_INVALID, f"compare needs two different scenarios, got {scenario_a!r} twice",
                           field="scenario_id", value=scenario_a)
    gate = pipeline.load_gate(store, idents[0], state="S3")
    coupling = ledger.parse_rng_policy(gate.policy("arrival_rng_policy_5B")).scenario_coupling
    frames = [_read_counts(store, ident) for ident in idents]
    first = idents[0]
    return ScenarioComparison(seed=first.seed, parameter_hash=first.parameter_hash,
                              manifest_fingerprint=first.manifest_fingerprint,
                              scenarios=(idents[0].scenario_id, idents[1].scenario_id), scenario_coupling=coupling,
                              counts=compare_counts(*frames))


def _read_counts(store: Store, identity: Identity) -> pl.DataFrame:
    path = pipeline.output_path(store, "s3_bucket_counts_5B", identity)
    try:
        return pipeline.read_table(path, [*ENTITY_KEYS, "count_N"])
    except (OSError, pl.exceptions.PolarsError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArrivalError(error_code("S3", "IO_READ_FAILED"),
                           f"s3_bucket_counts_5B of scenario {identity.scenario_id}, seed {identity.seed} cannot be "
                           f"read at {path}: {reason}; run S3 for it first", file=str(path),
                           scenario_id=identity.scenario_id) from exc
