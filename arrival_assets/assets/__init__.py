"""The asset graph: sealed inputs from the dataset dictionary, then one multi-asset per state."""

from __future__ import annotations

import dagster as dg

from .sealed_inputs import build_sealed_inputs_asset
from .states import build_state_assets


def build_assets() -> list[dg.AssetsDefinition]:
    """Every asset of the graph: the sealed inputs, then S0, S1, S2, S3 and the audit."""
    sealed = build_sealed_inputs_asset()
    keys = tuple(k.to_user_string() for k in sealed.keys)
    return [sealed, *build_state_assets(keys)]
