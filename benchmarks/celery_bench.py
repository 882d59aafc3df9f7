"""One seed of a world (every scenario) in process and through `arrival cluster up --workers N`, side by side: wall
seconds of `arrival run --seed S` each way, whether every output is byte-identical, and where a step's time goes on
Celery (submitted → started on a worker → ended → seen by the coordinator), from the runs' events.

    python benchmarks/celery_bench.py [--profile demo] [--seed 1] [--repeats 3] [--workers 2] [--base DIR]

The cluster is started once (`arrival cluster up`, not timed); each repetition realises the seed on a fresh copy of
the world in each mode, alternating which goes first, with a fresh DAGSTER_HOME opened beforehand for the in-process
run. An untimed warm-up round first (`--warmup 0` to skip it) loads each worker's compiled kernels. Medians are
printed, and every figure as JSON with `--json FILE`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLUSTER_VARIABLES = ("ARRIVAL_PG_URL", "ARRIVAL_CELERY_BROKER", "ARRIVAL_CELERY_BACKEND", "ARRIVAL_RUN_ROOT")
RUN_ID = re.compile(r"\brun ([0-9a-f-]{36})\)")
ARRIVAL = str(Path(sys.executable).parent / "arrival")


def arrival(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """`arrival ARGS` to its end: wall seconds, CPU seconds of the process (and its children) and stdout; a failure
    stops the bench with its output."""
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([ARRIVAL, *args], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"arrival {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, cpu_seconds, done.stdout


def output_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under data/layer2/5B, run reports left out (they carry run ids and times)."""
    top = root / "data" / "layer2" / "5B"
    return {
        str(path.relative_to(top)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(top.rglob("*"))
        if path.is_file() and "run_report" not in path.relative_to(top).parts
    }


def run_events(home: Path, run_id: str) -> list:
    """The run's event records from the instance at `home`."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [r.event_log_entry for r in instance.get_records_for_run(run_id, limit=100000).records]


def step_times(entries: list) -> dict:
    """From one run's events: the run's seconds, the steps' own seconds (STEP_START → end), and on Celery each
    step's wait from submission to STEP_START (queue, job rebuilt in the worker, plan) and from its end to the
    next submission (the coordinator's poll)."""
    run_start = run_end = None
    submitted, started, ended = {}, {}, {}
    for entry in entries:
        event = entry.dagster_event
        if event is None:
            continue
        kind, step, t = event.event_type_value, entry.step_key, entry.timestamp
        if kind == "PIPELINE_START":  # Dagster's value of RUN_START
            run_start = t
        elif kind in ("PIPELINE_SUCCESS", "PIPELINE_FAILURE"):
            run_end = t
        elif kind == "STEP_START":
            started[step] = t
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            ended[step] = t
        elif kind == "ENGINE_EVENT" and step and entry.user_message.startswith("Submitting celery task"):
            submitted[step] = t
    body = sum(ended[s] - started[s] for s in ended if s in started)
    to_start = [started[s] - submitted[s] for s in submitted if s in started]
    ends = sorted(ended.values())
    seen = [min((t - e for t in submitted.values() if t >= e), default=None) for e in ends]
    seen = [x for x in seen if x is not None]
    return {
        "steps": len(started),
        "run_s": (run_end or 0) - (run_start or 0),
        "step_bodies_s": body,
        "outside_steps_per_step_s": ((run_end or 0) - (run_start or 0) - body) / max(len(started), 1),
        "submit_to_start_s": statistics.median(to_start) if to_start else None,
        "end_to_next_submit_s": statistics.median(seen) if seen else None,
        "step_s": {s: ended[s] - started[s] for s in sorted(started, key=started.get) if s in ended},
    }


def fresh_root(world: Path, target: Path) -> Path:
    """A copy of the world's inputs, for one realisation that computes everything."""
    shutil.copytree(world, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--seed", default="1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (1)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--base", help="scratch folder (default: a new one under /tmp, removed at the end)")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args(argv)

    base = Path(args.base or tempfile.mkdtemp(prefix="arrival-celery-bench-")).resolve()
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)  # PostgreSQL runs as another account when we are root: it must enter this folder
    plain = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARIABLES}
    world = base / "world"
    arrival(["world", "create", "--profile", args.profile, "--root", str(world), "--seeds", args.seed], plain)
    cluster_dir = base / "cluster"
    up_s, _, _ = arrival(["cluster", "up", "--workers", str(args.workers), "--base", str(cluster_dir),
                       "--root", str(world)], plain)
    from arrival_assets.cluster import read_env_file

    cluster_env = {**plain, **read_env_file(cluster_dir / "env.sh")}
    print(f"cluster up: {up_s:.1f} s ({args.workers} workers)", flush=True)
    rows = []
    try:
        for rep in range(args.warmup + args.repeats):
            timed = rep >= args.warmup
            order = ("in_process", "cluster") if rep % 2 == 0 else ("cluster", "in_process")
            row = {"rep": rep - args.warmup if timed else None}
            roots = {}
            for mode in order:
                folder = base / f"round-{rep}-{mode}"
                root = fresh_root(world, folder / "root")
                roots[mode] = root
                if mode == "in_process":
                    home = folder / "dagster_home"
                    env = {**plain, "DAGSTER_HOME": str(home)}
                    arrival(["partitions", "add", "--seed", args.seed, "--root", str(root)], env)  # opens it once
                else:
                    home, env = Path(cluster_env["DAGSTER_HOME"]), cluster_env
                seconds, cpu_seconds, out = arrival(["run", "--seed", args.seed, "--root", str(root), "--quiet"], env)
                row[f"{mode}_s"] = seconds
                row[f"{mode}_command_cpu_s"] = cpu_seconds  # `arrival run` (on the cluster: the coordinator only)
                row[f"{mode}_runs"] = [step_times(run_events(home, run_id)) for run_id in RUN_ID.findall(out)]
            left, right = output_digests(roots["in_process"]), output_digests(roots["cluster"])
            row["files"], row["identical"] = len(left), bool(left) and left == right
            row["ratio"] = row["cluster_s"] / row["in_process_s"]
            label = f"round {row['rep']}" if timed else "warm-up"
            print(f"{label}: in process {row['in_process_s']:.1f} s, cluster {row['cluster_s']:.1f} s "
                  f"(x{row['ratio']:.2f}), {row['files']} files identical: {row['identical']}; CPU of `arrival run`: "
                  f"in process {row['in_process_command_cpu_s']:.1f} s, coordinator {row['cluster_command_cpu_s']:.1f} s",
                  flush=True)
            for run in row["cluster_runs"]:
                print(f"    cluster run: {run['steps']} steps, {run['run_s']:.1f} s, step bodies "
                      f"{run['step_bodies_s']:.1f} s, outside steps {run['outside_steps_per_step_s']:.2f} s/step, "
                      f"submit->start {run['submit_to_start_s']:.2f} s, end->next submit "
                      f"{run['end_to_next_submit_s']:.2f} s", flush=True)
            for run in row["in_process_runs"]:
                print(f"    in-process run: {run['steps']} steps, {run['run_s']:.1f} s, step bodies "
                      f"{run['step_bodies_s']:.1f} s, outside steps {run['outside_steps_per_step_s']:.2f} s/step",
                      flush=True)
            for mode in order:
                for run in row[f"{mode}_runs"]:
                    print(f"    {mode:<10} " + ", ".join(f"{s} {t:.1f}" for s, t in run["step_s"].items()), flush=True)
            for root in roots.values():
                shutil.rmtree(root.parent)
            if timed:
                rows.append(row)
    finally:
        arrival(["cluster", "down", "--base", str(cluster_dir)], plain)
        if not args.base:
            shutil.rmtree(base, ignore_errors=True)
    summary = {
        "in_process_s": statistics.median(r["in_process_s"] for r in rows),
        "cluster_s": statistics.median(r["cluster_s"] for r in rows),
        "ratio": statistics.median(r["ratio"] for r in rows),
        "identical": all(r["identical"] for r in rows),
    }
    print(f"median of {len(rows)}: in process {summary['in_process_s']:.1f} s, cluster {summary['cluster_s']:.1f} s, "
          f"ratio {summary['ratio']:.2f}, outputs identical in every round: {summary['identical']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rounds": rows}, indent=1) + "\n")
    return 0 if summary["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
