"""The code version of every output: the package version and the version of the laws it implements.

Dagster shows an asset as stale when its code version changes, and a state's commit record names it, so a
materialisation is only taken as done by the same code and laws.
"""
from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version

from .gate import SPEC_VERSION


@cache
def code_version() -> str:
    """`<package version>+<laws version>`, e.g. `0.1.0+5B-1.0`."""
    try:
        package = version("arrival")
    except PackageNotFoundError:  # running from a source tree that was never installed
        package = "0+unknown"
    return f"{package}+{SPEC_VERSION}"
