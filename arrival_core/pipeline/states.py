"""The ordered table of states: what each is called, the runner that executes it, what it publishes.

The Dagster state assets, `arrival bench` and the CLI all read this table, so a state is added in one place and
every caller reaches its runner through a plain call.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .accounting import run_audit
from .plan import run_s0, run_s1
from .realise import run_s2, run_s3
from .shell import StateResult

Runner = Callable[..., StateResult]


@dataclass(frozen=True)
class State:
    """One state: its code (S0…AUDIT), step name and group, runner, output datasets and the dataset it is
    measured by (its rows are the state's rows in `arrival bench`; None: the RNG events it audits)."""

    code: str
    name: str
    runner: Runner
    outputs: tuple[str, ...]
    measured_by: str | None

    @property
    def group(self) -> str:
        """The Dagster group of the state's assets (its step name)."""
        return self.name


STATES: tuple[State, ...] = (
    State("S0", "s0_gate", run_s0, ("sealed_inputs_5B", "s0_gate_receipt_5B"), "sealed_inputs_5B"),
    State("S1", "s1_plan", run_s1, ("s1_time_grid_5B", "s1_grouping_5B"), "s1_grouping_5B"),
    State("S2", "s2_latent", run_s2,
          ("s2_realised_intensity_5B", "s2_latent_field_5B", "rng_event_arrival_lgcp_gaussian"),
          "s2_realised_intensity_5B"),
    State("S3", "s3_counts", run_s3, ("s3_bucket_counts_5B", "rng_event_arrival_bucket_count"),
          "s3_bucket_counts_5B"),
    State("AUDIT", "rng_audit", run_audit, ("rng_audit_log_5B",), None),
)


def state_of_output(dataset_id: str) -> State:
    """The state that publishes a dataset."""
    for state in STATES:
        if dataset_id in state.outputs:
            return state
    raise KeyError(f"no state publishes {dataset_id!r}")
