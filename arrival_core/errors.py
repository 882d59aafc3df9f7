"""The one exception type and the closed catalogue of canonical error codes (`5B.Sn.CATEGORY`)."""
from __future__ import annotations

from typing import Any

from .encoding import jsonable

_SHARED_IO = ("IO_READ_FAILED", "IO_WRITE_FAILED", "IO_WRITE_CONFLICT")

# State -> categories. The S2 list is exactly the 18 codes of the S2 spec §9; S1 and S3 mirror its categories.
CATALOGUE: dict[str, tuple[str, ...]] = {
    "S0": (
        "RUN_RECEIPT_MISSING",
        "RUN_RECEIPT_INVALID",
        "UPSTREAM_NOT_PASS",
        "POLICY_INVALID",
        "SCENARIO_MANIFEST_INVALID",
        "SEALED_INPUTS_INCOMPLETE",
        "INPUT_SCHEMA_INVALID",
        "OUTPUT_SCHEMA_INVALID",
        *_SHARED_IO,
    ),
    "S1": (
        "S0_GATE_INVALID",
        "UPSTREAM_NOT_PASS",
        "POLICY_INVALID",
        "INPUT_SCHEMA_INVALID",
        "HORIZON_MISALIGNED",
        "GRID_GUARDRAIL_BREACH",
        "DOMAIN_INVALID",
        "GROUP_ASSIGNMENT_INCOMPLETE",
        "GROUP_REALISM_FAILED",
        "TIME_GRID_SCHEMA_INVALID",
        "GROUPING_SCHEMA_INVALID",
        *_SHARED_IO,
    ),
    "S2": (
        "S0_GATE_INVALID",
        "UPSTREAM_NOT_PASS",
        "S1_OUTPUT_MISSING",
        "LAMBDA_SOURCE_MISSING",
        "LGCP_CONFIG_INVALID",
        "RNG_POLICY_INVALID",
        "DOMAIN_ALIGN_FAILED",
        "BUCKET_SET_INCONSISTENT",
        "KERNEL_CONSTRUCTION_FAILED",
        "LATENT_DOMAIN_INCOMPLETE",
        "LATENT_SCHEMA_INVALID",
        "REALISED_SCHEMA_INVALID",
        "REALISED_DOMAIN_INCOMPLETE",
        "REALISED_NUMERIC_INVALID",
        "RNG_ACCOUNTING_MISMATCH",
        "NON_DETERMINISTIC_OUTPUT",
        *_SHARED_IO,
    ),
    "WORLD": (
        "PROFILE_INVALID",
        "ARTEFACT_MISSING",
        *_SHARED_IO,
    ),
    "S3": (
        "S0_GATE_INVALID",
        "UPSTREAM_NOT_PASS",
        "S1_OUTPUT_MISSING",
        "S2_OUTPUT_MISSING",
        "COUNT_CONFIG_INVALID",
        "RNG_POLICY_INVALID",
        "DOMAIN_ALIGN_FAILED",
        "BUCKET_SET_INCONSISTENT",
        "COUNTS_SCHEMA_INVALID",
        "COUNTS_DOMAIN_INCOMPLETE",
        "COUNTS_NUMERIC_INVALID",
        "RNG_ACCOUNTING_MISMATCH",
        "NON_DETERMINISTIC_OUTPUT",
        *_SHARED_IO,
    ),
}

# Codes that belong to no single state.
IDENTITY_INVALID = "5B.IDENTITY_INVALID"  # a seed / scenario / hex id that fails its rule; before any path is built
CONTRACT_INVALID = "5B.CONTRACT_INVALID"  # a schema pack or the dataset dictionary itself is broken
NOT_MATERIALISED = "5B.PARTITION_NOT_MATERIALISED"  # a command over stored outputs found none (or not all)
USAGE_INVALID = "5B.USAGE_INVALID"  # a command line the `arrival` parser refuses: an unknown flag, a missing value
DAGSTER_HOME_INVALID = "5B.DAGSTER_HOME_INVALID"  # the Dagster instance's folder or database cannot be used
GLOBAL_CODES: tuple[str, ...] = (IDENTITY_INVALID, CONTRACT_INVALID, NOT_MATERIALISED, USAGE_INVALID, DAGSTER_HOME_INVALID)

# Steps that speak with another state's codes: the audit record is an S3-scoped dataset.
CODE_STATE = {"AUDIT": "S3"}

ALL_CODES: frozenset[str] = frozenset(
    GLOBAL_CODES + tuple(f"5B.{state}.{cat}" for state, cats in CATALOGUE.items() for cat in cats)
)


def has_code(state: str, category: str) -> bool:
    """Whether a state has a category in the catalogue (the audit speaks with S3's codes)."""
    return category in CATALOGUE.get(CODE_STATE.get(state, state), ())


def error_code(state: str, category: str) -> str:
    """The canonical code `5B.<state>.<category>` (the audit borrows S3's), refusing codes outside the catalogue."""
    code = f"5B.{CODE_STATE.get(state, state)}.{category}"
    if code not in ALL_CODES:
        raise ValueError(f"{code} is not in the 5B error catalogue")
    return code


class ArrivalError(Exception):
    """A failure with a canonical code, a message naming the file/column/key at fault, and its context."""

    def __init__(self, code: str, message: str, **context: Any) -> None:
        if code not in ALL_CODES:
            raise ValueError(f"{code} is not in the 5B error catalogue (message was: {message})")
        self.code = code
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}
        super().__init__(f"{code}: {message}")

    def to_dict(self) -> dict[str, Any]:
        """Return the error as a JSON-ready payload for run reports and Dagster metadata."""
        return {"error_code": self.code, "message": self.message, "context": jsonable(self.context)}
