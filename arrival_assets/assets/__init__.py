"""The asset graph: sealed inputs from the dataset dictionary, then one multi-asset per state."""

from __future__ import annotations

import dagster as dg

from .sealed_inputs import build_sealed_input_assets
from .states import build_state_assets


def build_assets() -> list[dg.AssetsDefinition]:
    """Every asset of the graph: the sealed inputs, then S0, S1, S2, S3 and the audit."""
    sealed = build_sealed_input_assets()
    keys = tuple(a.key.to_user_string() for a in sealed)
    return [*sealed, *build_state_assets(keys)]
