"""Upstream tables against the digests their PASS bundle recorded: a table edited after its segment PASSed is
never sealed (5A's bundle lists every table it validated in `tables.json`)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from .errors import ArrivalError, error_code

BUNDLE_TABLES_FILE = "tables.json"  # a bundle member listing {dataset_id, path, scenario_id, rows, sha256_hex}


def listed_table_paths(listing: object, segment: str, *, where: str) -> list[str]:
    """The run-root-relative paths a bundle's table listing names; a listing of another shape fails the gate."""
    if not isinstance(listing, list) or not all(
            isinstance(r, dict) and isinstance(r.get("path"), str) and isinstance(r.get("sha256_hex"), str)
            for r in listing):
        raise ArrivalError(error_code("S0", "UPSTREAM_NOT_PASS"),
                           f"{where}: segment {segment}'s table listing is not a list of {{path, sha256_hex}} rows",
                           file=where, segment=segment)
    return [r["path"] for r in listing]


def check_table_digests(listing: Sequence[Mapping], observed: Mapping[str, str | None], *, segment: str,
                        where: str) -> None:
    """A sealed table whose sha256 differs from the one its PASS bundle recorded fails the gate, naming the
    table and both digests (tables the state did not read, observed None, are not judged here)."""
    for row in listing:
        digest = observed.get(row["path"])
        if digest is not None and digest != row["sha256_hex"]:
            raise ArrivalError(
                error_code("S0", "UPSTREAM_NOT_PASS"),
                f"{row['path']} ({row.get('dataset_id', 'a table')}) has sha256 {digest}, but segment {segment}'s "
                f"bundle recorded {row['sha256_hex']} when it PASSed ({where}): the table changed after validation",
                file=row["path"], segment=segment, dataset=row.get("dataset_id"),
            )
