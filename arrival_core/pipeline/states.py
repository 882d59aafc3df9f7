"""The ordered table of states: what each is called, the runner that executes it, the dataset it is measured by.

What a state publishes comes from the dataset dictionary (each output's `state`). The Dagster state assets,
`arrival bench` and the CLI all read this table, so every caller reaches a runner through a plain call.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import contracts
from .accounting import run_audit
from .plan import run_s0, run_s1
from .realise import run_s2, run_s3
from .shell import Runner


@dataclass(frozen=True)
class State:
    """One state: its code (S0…AUDIT), step name and group, runner, the dataset it is measured by (its rows are
    the state's rows in `arrival bench`; None: the RNG events it audits) and whether it streams (S2, S3: it
    reports progress as it goes)."""

    code: str
    name: str
    runner: Runner
    measured_by: str | None
    streams: bool = False

    @property
    def outputs(self) -> tuple[str, ...]:
        """The datasets the state publishes as its own (the dictionary's; companions such as traces excluded)."""
        return contracts.outputs_of(self.code)

    @property
    def group(self) -> str:
        """The Dagster group of the state's assets (its step name)."""
        return self.name


STATES: tuple[State, ...] = (
    State("S0", "s0_gate", run_s0, "sealed_inputs_5B"),
    State("S1", "s1_plan", run_s1, "s1_grouping_5B"),
    State("S2", "s2_latent", run_s2, "s2_realised_intensity_5B", streams=True),
    State("S3", "s3_counts", run_s3, "s3_bucket_counts_5B", streams=True),
    State("AUDIT", "rng_audit", run_audit, None),
)


def state_of_output(dataset_id: str) -> State:
    """The state that publishes a dataset (the dictionary's `state`; a companion's is its owner's)."""
    code = contracts.dataset(dataset_id).state
    for state in STATES:
        if state.code == code:
            return state
    raise KeyError(f"no state publishes {dataset_id!r}")
