"""The `arrival_5b` job: the whole graph (assets and checks); partitioned by the grid its assets share."""

from __future__ import annotations

import dagster as dg

JOB_NAME = "arrival_5b"

arrival_5b = dg.define_asset_job(
    JOB_NAME,
    selection=dg.AssetSelection.all(),
    description="Sealed inputs, S0 gate, S1 plan, S2 latent fields, S3 counts, RNG audit; all checked.",
)
