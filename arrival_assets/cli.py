"""The `arrival` console script: one small function per subcommand; Dagster is imported inside commands."""
from __future__ import annotations

import argparse
import atexit
import difflib
import os
import sys
import threading
import traceback
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from arrival_core.errors import IDENTITY_INVALID, USAGE_INVALID, ArrivalError
from arrival_core.identity import validate_seed

from . import interrupts
from .cluster import ClusterError
from .threads import add_threads_option, use_threads

DEFAULT_ROOT_PARENT = Path(".arrival")

Handler = Callable[[argparse.Namespace], int]


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Parser(argparse.ArgumentParser):
    """argparse whose refusals are one coded line (5B.USAGE_INVALID, exit 2), naming an unknown flag before
    anything else is judged: `--sed 42` is "unknown flag --sed", not "required: --seed"."""

    def parse_known_args(self, args=None, namespace=None):
        tokens = list(sys.argv[1:] if args is None else args)
        self._refuse_unknown_flags(tokens)
        return super().parse_known_args(tokens, namespace)

    def _refuse_unknown_flags(self, tokens: list[str]) -> None:
        """Name the first flag this parser does not know; a subcommand's tokens are left to its own parser."""
        known = [o for o in self._option_string_actions if o.startswith("--")]
        commands = self._subparsers._group_actions[0].choices if self._subparsers is not None else {}
        for token in tokens:
            if token == "--" or token in commands:
                return
            if not token.startswith("-") or token == "-" or self._negative_number_matcher.match(token):
                continue
            flag = token.split("=", 1)[0]
            if flag in self._option_string_actions or any(o.startswith(flag) for o in known if flag.startswith("--")):
                continue  # a flag, or an abbreviation argparse resolves (or calls ambiguous itself)
            close = difflib.get_close_matches(flag, known, n=1)
            self.error(f"unknown flag {flag}" + (f" (did you mean {close[0]}?)" if close else ""))

    def error(self, message: str) -> typing.NoReturn:
        """One line on stderr, `error: 5B.USAGE_INVALID: <command>: <message>; see <command> --help`; exit 2."""
        self.exit(interrupts.EXIT_FAILURE, f"error: {USAGE_INVALID}: {self.prog}: {message}; see `{self.prog} --help`\n")


IDENTITY_OPTIONS = ("root", "scenario", "seed", "seeds", "world_seed")  # options naming a run root or identity


def refuse_empty_options(args: argparse.Namespace) -> None:
    """An identity option given as an empty string (`--root ''`, `--scenario ''`) is IDENTITY_INVALID, never
    taken for an absent one (which would mean the default root, or every scenario)."""
    for name in IDENTITY_OPTIONS:
        value = getattr(args, name, None)
        if any(v == "" for v in (value if isinstance(value, list) else [value])):
            option = "--" + name.replace("_", "-")
            raise ArrivalError(IDENTITY_INVALID, f"{option} is empty: give a value or leave the option out",
                               field=name, value="''")


def _seed_list(text: str) -> list[int]:
    """Parse `42,7` into validated seeds (IDENTITY_INVALID names the bad one)."""
    return [validate_seed(part.strip()) for part in text.split(",") if part.strip()]


def _add_root(parser: argparse.ArgumentParser) -> None:
    """The `--root` option of every command that reads a run root."""
    parser.add_argument("--root", help="run root (default $ARRIVAL_RUN_ROOT or ./.arrival/demo)")


CREATE_HELP = "create the demo world in --root when it is absent or empty (without --root it is created anyway)"


def _may_create(args: argparse.Namespace) -> bool:
    """Whether an absent or empty run root may get the demo world: the default one always, a --root only with
    --create (a mistyped path is refused, not filled with a world)."""
    return args.root is None or args.create


# ---- arrival world create -------------------------------------------------------------------------------------

def world_create(args: argparse.Namespace) -> int:
    """Create (or confirm byte for byte) a synthetic world; print its root, fingerprint and row counts."""
    from arrival_core.world import create_world

    root = Path(args.root) if args.root else DEFAULT_ROOT_PARENT / args.profile
    world_seed = None if args.world_seed is None else validate_seed(args.world_seed)
    info = create_world(args.profile, root, world_seed=world_seed, seeds=_seed_list(args.seeds),
                        progress=_err)
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


class _Profiles:
    """The world profiles as argparse choices, listed only when a command shows or checks them (listing imports polars)."""

    def __iter__(self) -> Iterator[str]:
        from arrival_core.world import available_profiles

        return iter(available_profiles())

    def __contains__(self, name: object) -> bool:
        return name in tuple(self)


def _add_world(sub: argparse._SubParsersAction) -> None:
    world = sub.add_parser("world", help="synthetic upstream worlds")
    world_sub = world.add_subparsers(dest="world_command", required=True)
    create = world_sub.add_parser("create", help="create a synthetic world (a no-op if it already exists)")
    create.add_argument("--profile", required=True, choices=_Profiles(), metavar="PROFILE", help="one of %(choices)s")
    create.add_argument("--root", help="run root (default ./.arrival/<profile>)")
    create.add_argument("--world-seed", help="world seed (default: the profile's)")
    create.add_argument("--seeds", default="42", help="comma-separated seeds to write 3B files for (42)")
    create.set_defaults(handler=world_create)


# ---- arrival partitions add ----------------------------------------------------------------------------------

def partitions_add(args: argparse.Namespace) -> int:
    """Register seeds (and the world's scenarios) as partitions in the Dagster instance at $DAGSTER_HOME."""
    from .commands import add_partitions

    return add_partitions(root=args.root, seeds=args.seed, scenarios=args.scenario, create=_may_create(args))


def _add_partitions(sub: argparse._SubParsersAction) -> None:
    partitions = sub.add_parser("partitions", help="seed x scenario partitions of the Dagster instance")
    partitions_sub = partitions.add_subparsers(dest="partitions_command", required=True)
    add = partitions_sub.add_parser("add", help="register seeds (and scenarios) as partitions")
    add.add_argument("--seed", action="append", required=True, help="seed to register (repeatable)")
    add.add_argument("--scenario", action="append", help="scenario to register (repeatable; default: all)")
    _add_root(add)
    add.add_argument("--create", action="store_true", help=CREATE_HELP)
    add.set_defaults(handler=partitions_add)
    remove = partitions_sub.add_parser("remove", help="delete registered seed or scenario keys (e.g. one added by hand)")
    remove.add_argument("--seed", action="append", help="seed key to delete (repeatable)")
    remove.add_argument("--scenario", action="append", help="scenario key to delete (repeatable)")
    remove.set_defaults(handler=partitions_remove)


def partitions_remove(args: argparse.Namespace) -> int:
    """Delete registered seed or scenario keys from the Dagster instance at $DAGSTER_HOME."""
    from .commands import remove_partitions

    return remove_partitions(seeds=args.seed, scenarios=args.scenario)


# ---- arrival run ----------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    """Materialise the whole graph for each (scenario, seed) partition and print a summary per partition: in
    this process one after the other, or with `--parallel K` > 1 as up to K `arrival run` processes at once."""
    from arrival_core import memory

    from .concurrency import concurrent_runs

    memory.collect_rarely()  # before Dagster is imported: its loading makes most of a run's full collections
    use_threads(args.threads)
    parallel = concurrent_runs() if args.parallel is None else args.parallel
    if parallel < 1:
        raise ArrivalError(USAGE_INVALID, f"--parallel must be at least 1, got {parallel}")
    if parallel > 1 and len(args.seed) > 1:  # Dagster and the kernels are loaded by each partition's process
        from .parallel_runs import run_in_processes

        return run_in_processes(root=args.root, seeds=args.seed, scenario=args.scenario, parallel=parallel,
                                quiet=args.quiet, debug=args.debug, create=_may_create(args), err=_err)

    from arrival_core import checks, contracts, pipeline, warmup

    from .executors import celery_settings

    if celery_settings() is None:  # steps run in this process: a child compiles their kernels while Dagster loads
        config_dir = Path(os.environ.get("ARRIVAL_CONFIG_DIR") or contracts.DEFAULT_CONFIG_DIR)
        warmup.start(pipeline.warmup_phases(config_dir) + checks.warmup_phases())
    try:
        from . import definitions  # noqa: F401 - Dagster and the job: loaded while a parent ensures the world
        from .commands import run_partitions
        from .parallel_runs import wait_for_world

        if not wait_for_world():
            return 0  # the parent found the world wanting and says why
        statuses = [run_partitions(root=args.root, seed=seed, scenario=args.scenario, err=_err, quiet=args.quiet,
                                   debug=args.debug, create=_may_create(args)) for seed in args.seed]
        return interrupts.worst_status(statuses)
    finally:
        warmup.stop()


def _add_run(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="materialise S0-S3 and the audit, with every check, into the Dagster instance")
    parser.add_argument("--seed", action="append", required=True, help="seed to realise (repeatable)")
    parser.add_argument("--scenario", help="one scenario (default: every scenario of the world)")
    parser.add_argument("--parallel", type=int, metavar="K",
                        help="runs at once for several seeds (default: cores ÷ threads per run, bounded by memory)")
    _add_root(parser)
    parser.add_argument("--quiet", action="store_true", help="print only the summary (no step lines or progress)")
    parser.add_argument("--create", action="store_true", help=CREATE_HELP)
    add_threads_option(parser)
    parser.set_defaults(handler=run)


# ---- arrival verify -------------------------------------------------------------------------------------------

def verify(args: argparse.Namespace) -> int:
    """Run every check over a partition's stored outputs, replaying every RNG event."""
    from .verify import verify_partition

    return verify_partition(root=args.root, seed=args.seed, scenario=args.scenario)


def _add_verify(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("verify", help="all checks over stored outputs, with a full RNG replay")
    parser.add_argument("--seed", required=True, help="seed of the partition")
    parser.add_argument("--scenario", required=True, help="scenario of the partition")
    _add_root(parser)
    parser.set_defaults(handler=verify)


# ---- arrival bench --------------------------------------------------------------------------------------------

def _add_bench(sub: argparse._SubParsersAction) -> None:
    from .bench_command import add_parser

    add_parser(sub, _err)


# ---- arrival compare ------------------------------------------------------------------------------------------

def compare(args: argparse.Namespace) -> int:
    """Totals of two scenarios' counts for one seed, their difference and its standard error across entities."""
    from arrival_core.compare import compare_scenarios
    from arrival_core.identity import PartitionKey
    from arrival_core.store import Store

    from .run_roots import resolve_run_root
    from .verify import relative, require_materialised

    if len(args.scenario) != 2:
        raise ArrivalError(IDENTITY_INVALID, f"compare takes exactly two --scenario, got {len(args.scenario)}",
                           field="scenario_id")
    root = resolve_run_root(args.root)
    store = Store(run_root=root)
    try:
        for sid in args.scenario:  # no world, an unknown scenario or a partition never run: one line each
            require_materialised(store, PartitionKey(args.seed, sid), ["s3_bucket_counts_5B"])
        result = compare_scenarios(store, seed=args.seed, scenario_a=args.scenario[0], scenario_b=args.scenario[1])
    except ArrivalError as exc:
        raise ArrivalError(exc.code, relative(exc.message, root), **exc.context) from exc
    a, b = result.scenarios
    c = result.counts
    print(f"seed {result.seed} · parameter_hash {result.parameter_hash[:12]} · {result.scenario_coupling}")
    for sid, total in zip(result.scenarios, c.totals, strict=True):
        print(f"  {sid:<24} Σ count_N {total:>14,}")
    se = "—" if c.standard_error is None else f"{c.standard_error:,.1f}"
    print(f"  {b} − {a}: {c.difference:+,} (paired over {c.entities:,} entities {c.paired_difference:+,}, "
          f"standard error {se})")
    if result.coupled:
        print("  the scenarios share their random numbers (common_v1): the difference comes from the scenarios,")
        print("  not from independent noise")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("compare", help="two scenarios' count totals for one seed and their difference")
    parser.add_argument("--seed", required=True, help="seed of both partitions")
    parser.add_argument("--scenario", action="append", required=True, help="a scenario (give exactly two)")
    _add_root(parser)
    parser.set_defaults(handler=compare)


# ---- arrival status ------------------------------------------------------------------------------------------

def status(args: argparse.Namespace) -> int:
    """Per partition: which states are materialised and how their checks went (from the Dagster instance)."""
    from .status import show_status

    return show_status(seed=args.seed)


def _add_status(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("status", help="per-partition state and check results recorded in the Dagster instance")
    parser.add_argument("--seed", help="only this seed's partitions")
    parser.set_defaults(handler=status)


# ---- arrival worker / cluster / instance (beyond one machine) ---------------------------------------------------

def _add_cluster(sub: argparse._SubParsersAction) -> None:
    from .cluster import add_cluster_parser, add_instance_parser, add_worker_parser

    add_worker_parser(sub)
    add_cluster_parser(sub)
    add_instance_parser(sub)


# ---- the parser and the entry point ---------------------------------------------------------------------------

COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_world, _add_partitions, _add_run, _add_verify, _add_bench, _add_compare, _add_status, _add_cluster,
)


def build_parser() -> argparse.ArgumentParser:
    """Return the `arrival` argument parser with every subcommand registered."""
    parser = Parser(prog="arrival", description="Segment 5B arrival realisation.")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of a failure")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status (see `interrupts.EXIT_*`).

    0 success; 2 a coded failure (`error: <code>: <message>` on stderr); 1 only blocking checks failed (the
    command says so); 130 / 143 interrupted by SIGINT / SIGTERM. No traceback is shown unless `--debug`.
    """
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    with interrupts.stopping_on_signals():
        try:
            refuse_empty_options(args)
            return handler(args)
        except interrupts.Interrupted as exc:
            _err(f"interrupted by {exc.signal_name}: stopped; nothing partial was kept")
            return exc.exit_status
        except ArrivalError as exc:
            if args.debug:
                traceback.print_exc()
            _err(f"error: {exc.code}: {exc.message}")
            return interrupts.EXIT_FAILURE
        except ClusterError as exc:  # a missing server binary or a service that did not start: the message says which
            if args.debug:
                traceback.print_exc()
            _err(f"error: {exc}")
            return interrupts.EXIT_FAILURE
        except Exception as exc:  # noqa: BLE001 - an uncoded failure is a defect: say so, keep the traceback optional
            if args.debug:
                traceback.print_exc()
            from .instance_storage import storage_failure

            coded = storage_failure(exc)
            if coded is not None:  # the instance's folder or database failed, not this program
                _err(f"error: {coded.code}: {coded.message}")
                return interrupts.EXIT_FAILURE
            _err(f"error: internal error: {type(exc).__name__}: {exc}"
                 + ("" if args.debug else " (run with --debug for the traceback)"))
            return interrupts.EXIT_FAILURE


def run_console() -> None:
    """The `arrival` console script: `main`'s status as the process's, ending without the interpreter's teardown.

    With Dagster, numba, Arrow and matplotlib loaded, clearing every module at exit takes about a second after
    each command. Everything a normal exit does for others still happens first: threads are joined and their
    exit hooks run (`threading._shutdown`), then `atexit` handlers (logging, temporary folders, numba, filelock),
    then the standard streams are flushed.
    """
    status = main()
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`arrival status | head`): nothing more can be written
            pass
    os._exit(status)


if __name__ == "__main__":
    run_console()
