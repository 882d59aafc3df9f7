"""The `arrival` console script: one small function per subcommand; Dagster is imported only inside commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from arrival_core.errors import ArrivalError
from arrival_core.identity import validate_seed

DEFAULT_ROOT_PARENT = Path(".arrival")

Handler = Callable[[argparse.Namespace], int]


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _seed_list(text: str) -> list[int]:
    """Parse `42,7` into validated seeds (IDENTITY_INVALID names the bad one)."""
    return [validate_seed(part.strip()) for part in text.split(",") if part.strip()]


# ---- arrival world create -------------------------------------------------------------------------------------

def world_create(args: argparse.Namespace) -> int:
    """Create (or confirm, byte for byte) a synthetic world and print where it is, its fingerprint and row counts."""
    from arrival_core.world import create_world

    root = Path(args.root) if args.root else DEFAULT_ROOT_PARENT / args.profile
    world_seed = None if args.world_seed is None else validate_seed(args.world_seed)
    info = create_world(args.profile, root, world_seed=world_seed, seeds=_seed_list(args.seeds), progress=_err)
    print(f"run root             {info.root}")
    print(f"profile              {info.profile} (world_seed {info.world_seed})")
    print(f"manifest_fingerprint {info.manifest_fingerprint}")
    print(f"parameter_hash       {info.parameter_hash} (upstream)")
    print(f"scenarios            {', '.join(info.scenario_ids)}")
    print(f"seeds                {', '.join(str(s) for s in info.seeds)}")
    width = max(len(name) for name in info.rows)
    for name, rows in info.rows.items():
        print(f"  {name:<{width}}  {rows:>12,} rows")
    return 0


def _add_world(sub: argparse._SubParsersAction) -> None:
    from arrival_core.world import available_profiles

    world = sub.add_parser("world", help="synthetic upstream worlds")
    world_sub = world.add_subparsers(dest="world_command", required=True)
    create = world_sub.add_parser("create", help="create a synthetic world (a no-op if it already exists)")
    create.add_argument("--profile", required=True, choices=available_profiles())
    create.add_argument("--root", help="run root (default ./.arrival/<profile>)")
    create.add_argument("--world-seed", help="world seed (default: the profile's)")
    create.add_argument("--seeds", default="42", help="comma-separated seeds to write 3B files for (default 42)")
    create.set_defaults(handler=world_create)


# ---- the parser and the entry point ---------------------------------------------------------------------------

COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_world,)


def build_parser() -> argparse.ArgumentParser:
    """Return the `arrival` argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="arrival", description="Segment 5B arrival realisation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an ArrivalError prints `error: <code>: <message>` on stderr and returns 2."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ArrivalError as exc:
        _err(f"error: {exc.code}: {exc.message}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
