"""The one way through the system: load → compute → validate → publish → report, per state (S0–S3 and the audit).

Both the Dagster assets and the CLI call these runners; this package and the store are where the core does I/O.
"""
from ..store import read_json
from .accounting import FamilyLedger, FamilyLog, read_family_log, read_ledger, read_ledgers, run_audit
from .compiling import warmup_phases
from .plan import run_s0, run_s1, verify_bundle
from .readers import (
    output_path,
    read_check_policy,
    read_config,
    read_entity_keys,
    read_rows,
    read_slices,
    read_table,
    table_rows,
    world_scenarios,
)
from .realise import run_s2, run_s3
from .records import check_basis, partition_verified, recorded_outcomes, write_check_record
from .shell import (
    Runner,
    RunOptions,
    StateResult,
    StateRun,
    World,
    arrow_schema,
    conform,
    execute_state,
    load_gate,
    parse_policy,
    read_receipt,
    read_sealed_table,
    read_world,
    resolve_identity,
    rng_failure,
    validate_output,
)
from .states import STATES, State, state_of_output
from .streaming import (
    ValueSets,
    default_chunk_entities,
    default_chunk_rows,
    identity_values,
    integer_extremes,
    read_whole_entities,
    surface_path,
)

__all__ = [
    "STATES",
    "FamilyLedger",
    "FamilyLog",
    "RunOptions",
    "Runner",
    "State",
    "StateResult",
    "StateRun",
    "ValueSets",
    "World",
    "arrow_schema",
    "check_basis",
    "conform",
    "default_chunk_entities",
    "default_chunk_rows",
    "execute_state",
    "identity_values",
    "integer_extremes",
    "load_gate",
    "output_path",
    "parse_policy",
    "partition_verified",
    "read_check_policy",
    "read_config",
    "read_entity_keys",
    "read_family_log",
    "read_json",
    "read_ledger",
    "read_ledgers",
    "read_receipt",
    "read_rows",
    "read_sealed_table",
    "read_slices",
    "read_table",
    "read_whole_entities",
    "read_world",
    "recorded_outcomes",
    "resolve_identity",
    "rng_failure",
    "run_audit",
    "run_s0",
    "run_s1",
    "run_s2",
    "run_s3",
    "state_of_output",
    "surface_path",
    "table_rows",
    "validate_output",
    "verify_bundle",
    "warmup_phases",
    "world_scenarios",
    "write_check_record",
]
