"""The `store` resource: one run root (ARRIVAL_RUN_ROOT, default ./.arrival/demo) and the world it holds."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from arrival_core import contracts, pipeline
from arrival_core.encoding import load_yaml
from arrival_core.errors import ArrivalError, error_code
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


class StoreResource(dg.ConfigurableResource):
    """The run root assets read and publish under; empty means $ARRIVAL_RUN_ROOT or ./.arrival/demo."""

    run_root: str = ""
    config_dir: str = ""  # the policy files; empty means $ARRIVAL_CONFIG_DIR, else the project's config/
    _root: Path | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._root = resolve_run_root(self.run_root)

    @property
    def root(self) -> Path:
        """The resolved run root (read from the environment at initialisation, never at import)."""
        if self._root is None:
            self._root = resolve_run_root(self.run_root)
        return self._root

    def open(self, seed: int | None = None) -> Store:
        """The store; creates the demo world on first use (and a synthetic world's file for `seed`)."""
        return ensure_world(self.root, seed, resolve_config_dir(self.config_dir))
