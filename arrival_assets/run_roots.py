"""Run roots and their worlds, without Dagster: which root and policy folder a command uses, the world and seed
files it ensures there, and the partitions it realises (what `arrival run --parallel` needs before it starts a
process per partition)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from arrival_core import contracts, pipeline
from arrival_core.encoding import load_yaml
from arrival_core.errors import IDENTITY_INVALID, ArrivalError, error_code
from arrival_core.identity import validate_scenario_id
from arrival_core.store import Store

from .cluster.settings import RUN_ROOT_ENV

CONFIG_DIR_ENV = "ARRIVAL_CONFIG_DIR"  # another folder of policy files (a variant: a new parameter_hash)
DEFAULT_RUN_ROOT = Path(".arrival") / "demo"
DEFAULT_PROFILE = "demo"


def resolve_run_root(explicit: str | os.PathLike | None = None) -> Path:
    """Return the run root: the explicit one, else $ARRIVAL_RUN_ROOT, else ./.arrival/demo (absolute)."""
    chosen = explicit or os.environ.get(RUN_ROOT_ENV) or DEFAULT_RUN_ROOT
    return Path(chosen).expanduser().resolve()


def resolve_config_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Return the policy folder: the explicit one, else $ARRIVAL_CONFIG_DIR, else the project's config/."""
    chosen = explicit or os.environ.get(CONFIG_DIR_ENV)
    return Path(chosen).expanduser().resolve() if chosen else contracts.DEFAULT_CONFIG_DIR


def ensure_world(
    root: Path, seed: int | None = None, config_dir: Path = contracts.DEFAULT_CONFIG_DIR,
    say: Callable[[str], None] | None = None, create: bool = True,
) -> Store:
    """Return the store of a run root: the demo world is created in an absent or empty root (unless `create` is
    false: then such a root is RUN_RECEIPT_MISSING, saying how to create it), and a synthetic world writes a new
    seed's 3B file. A root holding anything else is never written into as a world, and a real world never
    invents a seed's file (its sealed-input asset names what is missing).
    """
    from arrival_core import world  # the generator is only needed on first use

    if root.exists() and not root.is_dir():
        raise ArrivalError(error_code("S0", "IO_READ_FAILED"), f"run root {root} is not a directory", file=str(root))
    store = Store(run_root=root, config_dir=Path(config_dir))
    receipt = store.path("run_receipt")
    if not receipt.exists() and (not root.exists() or not any(root.iterdir())):
        if not create:
            raise ArrivalError(error_code("S0", "RUN_RECEIPT_MISSING"),
                               f"run root {root} holds no world (no {receipt.name}); add --create to create the "
                               f"{DEFAULT_PROFILE} world there, or make one with `arrival world create --profile "
                               f"<profile> --root {root}`", file=str(receipt))
        if say is not None:
            say(f"creating the {DEFAULT_PROFILE} world in {root} (first use; a few seconds)")
        world.create_world(DEFAULT_PROFILE, root, seeds=tuple(default_seeds()), progress=say)
    if seed is not None:
        ensure_seed(store, seed)
    return store


def ensure_seed(store: Store, seed: int) -> None:
    """A synthetic world writes the seed's 3B file if it has none (a real world never invents one)."""
    from arrival_core import world

    if store.path("run_receipt").is_file() and pipeline.read_receipt(store).get("synthetic") is True:
        world.ensure_seed(store.run_root, seed)


def default_seeds(config_dir: Path = contracts.DEFAULT_CONFIG_DIR) -> list[int]:
    """Return the default seeds of config/run_plan.yaml."""
    plan = load_yaml((Path(config_dir) / "run_plan.yaml").read_text())
    return [int(s) for s in plan.get("default_seeds") or []]



def scenarios_for(store: Store, requested: Sequence[str] | None) -> list[str]:
    """The scenarios to realise: the requested ones (each in the world's scenario manifest), else every one."""
    known = pipeline.world_scenarios(store)
    if requested is None:
        return known
    chosen = [validate_scenario_id(s) for s in requested]
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise ArrivalError(
            IDENTITY_INVALID,
            f"scenario(s) {unknown} are not in scenario_manifest_5A (known: {known})",
            field="scenario_id",
            value=repr(unknown),
        )
    return chosen


def partitions_to_run(*, root: str | None, seeds: Sequence[int], scenario: str | None, create: bool,
                      say: Callable[[str], None] | None) -> list[tuple[int, str]]:
    """Ensure the world (an absent or empty root gets the demo world only when `create`) and each seed's files,
    then the (seed, scenario) partitions to realise, seed by seed."""
    requested = [validate_scenario_id(scenario)] if scenario is not None else None
    store = ensure_world(resolve_run_root(root), say=say, create=create)
    scenarios = scenarios_for(store, requested)
    for seed in seeds:
        ensure_seed(store, seed)
    return [(seed, sid) for seed in seeds for sid in scenarios]
