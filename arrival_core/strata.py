"""The per-stratum law of S2's σ and length scale and of S3's κ: a base by scenario band times one multiplier per
stratum column, clipped to bounds; parsed once, computed as one Polars expression."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class StratumLaw:
    """base[scenario_band] × Π multipliers[column][row's column value], clipped to `bounds` (low, high)."""

    base: Mapping[str, float]
    multipliers: tuple[tuple[str, Mapping[str, float]], ...]  # (stratum column, its multiplier table), in order
    bounds: tuple[float, float]

    def table(self, column: str) -> Mapping[str, float]:
        """The multiplier table of one stratum column."""
        return dict(self.multipliers)[column]

    def expr(self) -> pl.Expr:
        """The law over a frame with the stratum columns (left to right, so every caller rounds alike); a stratum
        value missing from a table raises Polars' InvalidOperationError, which the caller names with its code."""
        value = _mapped("scenario_band", self.base)
        for column, table in self.multipliers:
            value = value * _mapped(column, table)
        return value.clip(*self.bounds)


def parse_law(block: Mapping, columns: Sequence[str], *, base: str = "base_by_scenario_band",
              bounds: str = "bounds") -> StratumLaw:
    """A law from a schema-valid policy block: `base`, `<column>_multipliers` per stratum column, `bounds`."""
    low, high = block[bounds]
    return StratumLaw(dict(block[base]), tuple((c, dict(block[f"{c}_multipliers"])) for c in columns),
                      (float(low), float(high)))


def _mapped(column: str, table: Mapping[str, float]) -> pl.Expr:
    return pl.col(column).replace_strict(dict(table), return_dtype=pl.Float64)
