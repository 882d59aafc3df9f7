"""The `store` resource: one run root (ARRIVAL_RUN_ROOT, default ./.arrival/demo) and the world it holds."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from arrival_core.store import Store

from .run_roots import ensure_world, resolve_config_dir, resolve_run_root


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
