"""Run reports: one JSON record per state execution (PASS or FAIL), a log that may carry run_id and wall-clock times."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .errors import ArrivalError
from .identity import Identity
from .store import Published

REPORT_SCHEMA = "schemas.5B.yaml#/report/run_report_5B"


def markdown_table(rows: Iterable[tuple[str, Any]], header: tuple[str, str] = ("field", "value")) -> str:
    """Render (name, value) pairs as a two-column Markdown table (floats to 6 significant digits)."""
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {name} | {_cell(value)} |" for name, value in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def utc_now() -> str:
    """The current UTC instant as ISO-8601 with microseconds and a Z suffix."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def error_payload(failure: BaseException) -> dict:
    """The error object of a report: the ArrivalError payload, or the exception type and text with no code."""
    if isinstance(failure, ArrivalError):
        return failure.to_dict()
    return {"error_code": None, "message": f"{type(failure).__name__}: {failure}", "context": {}}


def build_report(
    *,
    state: str,
    seed: int,
    scenario_id: str,
    run_id: str,
    identity: Identity | None,
    scenario_set: Sequence[str],
    failure: BaseException | None,
    started_at_utc: str,
    finished_at_utc: str,
    metrics: Mapping,
    published: Sequence[Published] = (),
    timings: Mapping[str, float] | None = None,
) -> dict:
    """The run report of one execution with the S2 spec §10 fields; ph and mf are null when never resolved."""
    error = error_payload(failure) if failure is not None else None
    return {
        "state_id": f"5B.{state}",
        "parameter_hash": identity.parameter_hash if identity else None,
        "manifest_fingerprint": identity.manifest_fingerprint if identity else None,
        "seed": seed,
        "scenario_id": scenario_id,
        "run_id": run_id,
        "scenario_set": sorted(scenario_set),
        "status": "FAIL" if failure is not None else "PASS",
        "error_code": error["error_code"] if error else None,
        "error": error,
        "started_at_utc": started_at_utc,
        "finished_at_utc": finished_at_utc,
        "metrics": {
            **metrics,
            "outputs": {
                p.dataset_id: {"path": str(p.path), "rows": p.rows, "sha256": p.sha256, "created": p.created}
                for p in published
            },
            "timings_seconds": dict(timings or {}),
        },
    }
