"""Core results as Dagster events: materialisations with digests and metadata, failures with codes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import dagster as dg

from arrival_core.errors import IDENTITY_INVALID, ArrivalError
from arrival_core.identity import PartitionKey
from arrival_core.reports import markdown_table
from arrival_core.store import Published

from ..partitions import parse_partition_key
from .columns import column_schema

T = TypeVar("T")


def failure_from(context: dg.AssetExecutionContext | dg.OpExecutionContext, err: ArrivalError) -> dg.Failure:
    """Log an ArrivalError with its code and return the Dagster failure carrying it as metadata."""
    payload = err.to_dict()
    context.log.error(f"{err.code}: {err.message}")
    return dg.Failure(
        description=f"{err.code}: {err.message}",
        metadata={
            "error_code": err.code,
            "error_message": err.message,
            "error_context": dg.MetadataValue.json(payload["context"]),
        },
    )


def call_core(
    context: dg.AssetExecutionContext | dg.OpExecutionContext, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """Call into arrival_core, turning an ArrivalError into a Dagster failure that names its code."""
    try:
        return fn(*args, **kwargs)
    except ArrivalError as err:
        raise failure_from(context, err) from err


def partition_of(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> PartitionKey:
    """The validated (seed, scenario) of the running partition; a bad key, or none, fails with IDENTITY_INVALID."""
    if not context.has_partition_key:
        raise failure_from(context, ArrivalError(
            IDENTITY_INVALID, "this run has no partition: launch it for one `<scenario>|<seed>` partition "
            "(the UI's partition picker, or `arrival run --seed <seed> --scenario <scenario>`)", field="partition"))
    return call_core(context, parse_partition_key, context.partition_key)


GATE_RECEIPT = "s0_gate_receipt_5B"
PROGRESS_PREFIX = "progress "  # the step-log lines `arrival run` shows as a progress bar
TIMES_PREFIX = "time "  # the step-log line of a state's phase times, which `arrival run` prints


def sealed_parameter_hash(context: dg.AssetExecutionContext | dg.OpExecutionContext,
                          partition: str | None = None) -> str | None:
    """The parameter_hash S0 sealed for this partition (its latest materialisation: this run's when S0 ran in
    it), so every later step of a run keeps that identity even if a policy file is edited meanwhile.
    `partition`: another partition than the run's (a check-only run without one)."""
    key = partition if partition is not None else str(context.partition_key)
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(GATE_RECEIPT), asset_partitions=[key]),
        limit=1,
    ).records
    if not records:
        return None
    value = records[0].asset_materialization.metadata.get("parameter_hash") if records[0].asset_materialization else None
    return getattr(value, "value", value)


def scalar_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a run report's metrics to its scalar leaves ("a.b" names), for metadata and summary tables."""
    flat: dict[str, Any] = {}
    for name, value in metrics.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(scalar_metrics(value, f"{key}."))
        elif isinstance(value, (bool, int, float, str)) or value is None:
            flat[key] = value
    return flat


def table_metadata(dataset_id: str, rows: int | None) -> dict[str, Any]:
    """Dagster's own table entries: `dagster/row_count` and `dagster/column_schema` (from the contract)."""
    meta: dict[str, Any] = {}
    if rows is not None:
        meta["dagster/row_count"] = dg.MetadataValue.int(rows)
    schema = column_schema(dataset_id)
    if schema is not None:
        meta["dagster/column_schema"] = dg.MetadataValue.table_schema(schema)
    return meta


def published_metadata(
    published: Published,
    *,
    identity_tokens: Mapping[str, str],
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Metadata of one published file: path, rows, digest, whether this run created it, metrics, table."""
    flat = scalar_metrics(metrics or {})
    summary = [
        ("dataset", published.dataset_id),
        ("rows", published.rows if published.rows is not None else "—"),
        ("sha256", published.sha256),
        ("created by this run", published.created),
        *identity_tokens.items(),
        *flat.items(),
    ]
    meta: dict[str, Any] = {"plot": extra["plot"]} if extra and "plot" in extra else {}  # the picture leads
    meta |= {
        "parameter_hash": identity_tokens["parameter_hash"],
        "path": dg.MetadataValue.path(str(published.path)),
        "dagster/uri": published.path.as_uri(),
        "digest": published.sha256,
        "created": published.created,
        "summary": dg.MetadataValue.md(markdown_table(summary)),
    }
    meta |= table_metadata(published.dataset_id, published.rows)
    if metrics:
        meta["run_report_metrics"] = dg.MetadataValue.json(dict(metrics))
    meta.update(extra or {})
    return meta


def materialize(
    dataset_id: str,
    published: Published,
    *,
    identity_tokens: Mapping[str, str],
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dg.MaterializeResult:
    """A materialisation whose data version is the file's sha256."""
    return dg.MaterializeResult(
        asset_key=dataset_id,
        data_version=dg.DataVersion(published.sha256),
        metadata=published_metadata(published, identity_tokens=identity_tokens, metrics=metrics, extra=extra),
    )
