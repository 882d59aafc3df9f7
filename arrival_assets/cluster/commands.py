"""The command line of the cluster package: `worker`, `cluster up|down` and `instance`, registered by
`arrival` (cli.py) and by `python -m arrival_assets.cluster`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .instance import install_instance_config
from .local import cluster_down, cluster_up
from .settings import DEFAULT_CLUSTER_DIR, DEFAULT_QUEUE, ClusterError
from .worker import run_worker

DESCRIPTION = "Beyond one machine: a Postgres-backed instance, the Celery executor, workers and a local cluster."


def _worker(args: argparse.Namespace) -> int:
    return run_worker(args.concurrency, args.queue, args.name)


def _up(args: argparse.Namespace) -> int:
    cluster_up(args.workers, args.base, run_root=args.root, concurrency=args.concurrency, queue=args.queue)
    return 0


def _down(args: argparse.Namespace) -> int:
    outcome = cluster_down(args.base)
    if not outcome:
        print(f"no cluster recorded in {Path(args.base).resolve()}")
    return 0


def _instance(args: argparse.Namespace) -> int:
    home = install_instance_config(args.home)
    print(f"{home / 'dagster.yaml'}")
    return 0


def add_worker_parser(sub: argparse._SubParsersAction) -> None:
    """`worker [--concurrency N] [--queue Q] [--name NAME]`."""
    worker = sub.add_parser("worker", help="run a Celery worker for this code location (foreground)")
    worker.add_argument("--concurrency", type=int, default=1, help="steps run at once by this worker (1)")
    worker.add_argument("--queue", default=DEFAULT_QUEUE, help=f"Celery queue to consume ({DEFAULT_QUEUE})")
    worker.add_argument("--name", help="worker name (default arrival-<random>)")
    worker.set_defaults(handler=_worker)


def _add_base(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base", default=str(DEFAULT_CLUSTER_DIR), help=f"cluster folder ({DEFAULT_CLUSTER_DIR})"
    )


def add_cluster_parser(sub: argparse._SubParsersAction) -> None:
    """`cluster up [--workers N] [--base DIR] [--root DIR]` and `cluster down [--base DIR]`."""
    cluster = sub.add_parser("cluster", help="a local PostgreSQL, Redis and Celery workers")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    up = cluster_sub.add_parser("up", help="start PostgreSQL, Redis and N workers; write env.sh")
    up.add_argument("--workers", type=int, default=2, help="number of workers (2)")
    up.add_argument("--concurrency", type=int, default=1, help="steps at once per worker (1)")
    up.add_argument("--queue", default=DEFAULT_QUEUE, help=f"Celery queue of the workers ({DEFAULT_QUEUE})")
    _add_base(up)
    up.add_argument(
        "--root", help="run root shared by every process (default $ARRIVAL_RUN_ROOT or ./.arrival/demo)"
    )
    up.set_defaults(handler=_up)
    down = cluster_sub.add_parser("down", help="stop every process of the cluster by pid")
    _add_base(down)
    down.set_defaults(handler=_down)


def add_instance_parser(sub: argparse._SubParsersAction) -> None:
    """`instance [--home DIR]`: write $DAGSTER_HOME/dagster.yaml for the environment (e.g. before `dagster dev`)."""
    instance = sub.add_parser("instance", help="write $DAGSTER_HOME/dagster.yaml for the environment")
    instance.add_argument("--home", help="instance folder (default $DAGSTER_HOME or ./.arrival/dagster_home)")
    instance.set_defaults(handler=_instance)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m arrival_assets.cluster worker|cluster|instance ...`; exit 2 with the message on a ClusterError."""
    parser = argparse.ArgumentParser(prog="python -m arrival_assets.cluster", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_worker_parser, add_cluster_parser, add_instance_parser):
        add(sub)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
