"""`arrival bench`: the engine per state on a world (created from a profile when absent), a policy variant
(count law, latent kernel), and with `--dagster` the user's path too: the engine as a process of its own (this
command for one partition), then `arrival run` for that partition with every check, two at once, and the first
again (verified, not recomputed), each timed from spawn to exit beside the engine process."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from arrival_core import bench as core_bench
from arrival_core import contracts
from arrival_core.errors import IDENTITY_INVALID, ArrivalError
from arrival_core.identity import validate_seed

from .threads import add_threads_option, use_threads

DEFAULT_ROOT_PARENT = Path(".arrival")


def _files(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def variant_config(root: Path, count_law: str, kernel: str | None) -> tuple[Path, str]:
    """The shipped policies, or a copy under <root>/bench with another count law or latent kernel (a new
    parameter_hash, so the variant's outputs sit beside the shipped ones), rewritten only when its bytes differ:
    the engine process `--dagster` starts makes the same copy while its parent still uses it."""
    import yaml

    from arrival_core.encoding import load_yaml

    name = count_law + (f"-{kernel}" if kernel else "")
    if count_law == "poisson" and kernel is None:
        return contracts.DEFAULT_CONFIG_DIR, name
    config = root / "bench" / f"config-{name}"
    files = _files(contracts.DEFAULT_CONFIG_DIR)
    edits = {"arrival_count_config_5B.yaml": {"count_law_id": count_law}}
    if kernel:
        edits["arrival_lgcp_config_5B.yaml"] = {"latent_model_id": "log_gaussian_stationary_v1", "kernel_id": kernel}
    for file, changes in edits.items():
        doc = load_yaml(files[Path(file)].decode())
        doc.update(changes)
        files[Path(file)] = yaml.safe_dump(doc, sort_keys=False).encode()
    if config.is_dir() and _files(config) == files:
        return config, name
    shutil.rmtree(config, ignore_errors=True)
    for file, data in files.items():
        (config / file).parent.mkdir(parents=True, exist_ok=True)
        (config / file).write_bytes(data)
    return config, name


_NOT_INPUTS = {("bench",), ("records",), ("data", "layer2", "5B")}  # outputs and records of earlier runs


@contextmanager
def scratch_root(root: Path) -> Iterator[Path]:
    """A fresh run root under <root>/bench holding every input file of `root` (hard links, copies across file
    systems) and none of its 5B outputs or records, removed afterwards: each timing is of a realisation that
    computes, and the world's own outputs are never touched."""
    scratch = root / "bench" / f"scratch-{uuid.uuid4().hex[:12]}"
    try:
        for folder, subfolders, files in os.walk(root):
            relative = Path(folder).relative_to(root)
            subfolders[:] = [d for d in subfolders if (relative / d).parts not in _NOT_INPUTS]
            for name in files:
                target = scratch / relative / name
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(Path(folder) / name, target)
                except OSError:
                    shutil.copy2(Path(folder) / name, target)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class TimedRunFailed(RuntimeError):
    """A timed child (`arrival run`, the engine process) failed: its exit status and what it printed (the bench
    reports it as it is)."""

    def __init__(self, status: int, stderr: str) -> None:
        self.status, self.stderr = status, stderr
        super().__init__(f"a timed child exited {status}")


# Linux counts in a child's peak RSS the memory of the process it was forked from, so the bench (gigabytes after
# the in-process states) starts each timed child through this small interpreter and takes the peak it reports.
_SPAWN = """
import os, signal, sys
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child gets the interrupt and says how it ended
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_timed(args: list[str], env: dict[str, str]) -> tuple[str, float, int]:
    """Run a child to its exit: what it printed on stderr, its wall seconds from spawn to exit, and its own peak
    RSS with its descendants' (neither the bench's nor an earlier child's); a failure raises TimedRunFailed."""
    with tempfile.TemporaryFile() as stderr, tempfile.NamedTemporaryFile("r") as peak:
        start = time.perf_counter()
        status = subprocess.run([sys.executable, "-I", "-S", "-c", _SPAWN, peak.name, *args], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                check=False).returncode
        seconds = time.perf_counter() - start
        stderr.seek(0)
        text = stderr.read().decode(errors="replace")
        peak_kib = peak.read().strip()
    if status != 0:
        raise TimedRunFailed(status, text.strip())
    return text, seconds, int(peak_kib) * 1024  # Linux reports KiB


def time_engine_process(root: Path, args: argparse.Namespace, seed: int, scenario: str) -> core_bench.PathTiming:
    """Wall time and peak RSS of the engine as a user's process: this command, without `--dagster` or a record,
    for one partition of the world at `root` (its own scratch root under <root>/bench, removed when it exits)."""
    command = [sys.executable, "-m", "arrival_assets.cli", "bench", "--root", str(root), "--seed", str(seed),
               "--scenario", scenario, "--count-law", args.count_law, "--no-record",
               *(("--kernel", args.kernel) if args.kernel else ())]
    _, seconds, peak = run_timed(command, dict(os.environ))  # $ARRIVAL_THREADS carries `--threads`
    return core_bench.PathTiming(core_bench.ENGINE_PROCESS, round(seconds, 3), peak)


_CHECKS_CPU = re.compile(r"time state .*, checks [0-9.]+ s \(([0-9.]+) CPU s\)")


def time_arrival_run(root: Path, config: Path, seeds: list[int], scenario: str, home: Path,
                     name: str) -> core_bench.PathTiming:
    """Wall time and peak RSS of `arrival run` for the partitions of `seeds` (at once when several: a child
    process, as a user runs it), with the CPU seconds of every check its state steps reported (their phase-time
    lines)."""
    env = {**os.environ, "DAGSTER_HOME": str(home), "ARRIVAL_RUN_ROOT": str(root)}
    args = [sys.executable, "-m", "arrival_assets.cli", "run", "--root", str(root), "--scenario", scenario,
            *(a for seed in seeds for a in ("--seed", str(seed)))]
    if len(seeds) > 1:
        args += ["--parallel", str(len(seeds))]
    if config != contracts.DEFAULT_CONFIG_DIR:
        env["ARRIVAL_CONFIG_DIR"] = str(config)
    stderr, seconds, peak = run_timed(args, env)
    checks = [float(m.group(1)) for m in _CHECKS_CPU.finditer(stderr)]
    return core_bench.PathTiming(name, round(seconds, 3), peak, len(seeds),
                                 round(sum(checks) / len(seeds), 3) if checks else None)


def bench(args: argparse.Namespace, err) -> int:
    """Run S0–S3 and the audit on a world; print and save the per-state timings (and the Dagster paths)."""
    from arrival_core import pipeline
    from arrival_core.store import Store
    from arrival_core.world import available_profiles, create_world, ensure_seed

    use_threads(args.threads)
    if not args.root and not args.profile:
        raise ArrivalError(IDENTITY_INVALID, "arrival bench needs --profile (to create a world) or --root (a world)")
    from arrival_core.kernels import KERNELS

    if args.kernel and args.kernel not in KERNELS:
        raise ArrivalError(IDENTITY_INVALID, f"unknown latent kernel {args.kernel!r}; the kernels are {', '.join(KERNELS)}")
    if args.profile and args.profile not in available_profiles():
        raise ArrivalError(IDENTITY_INVALID, f"unknown world profile {args.profile!r}; the profiles are "
                                             f"{', '.join(available_profiles())}")
    root = (Path(args.root) if args.root else DEFAULT_ROOT_PARENT / args.profile).resolve()
    seed = validate_seed(args.seed)
    if not Store(run_root=root).path("run_receipt").exists():
        if not args.profile:
            raise ArrivalError(IDENTITY_INVALID, f"{root} holds no world; give --profile to create one")
        create_world(args.profile, root, seeds=(seed, seed + 1), progress=err)
    config, variant = variant_config(root, args.count_law, args.kernel)
    world = args.profile or root.name
    with scratch_root(root) as scratch:
        ensure_seed(scratch, seed)  # a synthetic world's 3B file of a seed it lacks, as `arrival run` writes it
        store = Store(run_root=scratch, config_dir=config)
        scenarios = [args.scenario] if args.scenario else pipeline.world_scenarios(store)
        result = core_bench.run_bench(store, world=world, variant=variant, seed=seed, scenarios=scenarios)
        if args.dagster:
            with tempfile.TemporaryDirectory(prefix="arrival-bench-home-") as home:
                try:
                    paths = (
                        time_engine_process(root, args, seed + 1, scenarios[0]),
                        time_arrival_run(scratch, config, [seed + 1], scenarios[0], Path(home),
                                         core_bench.DAGSTER_PARTITION),
                        time_arrival_run(scratch, config, [seed + 2, seed + 3], scenarios[0], Path(home),
                                         core_bench.DAGSTER_PAIR),
                        time_arrival_run(scratch, config, [seed + 1], scenarios[0], Path(home), core_bench.VERIFIED),
                    )
                except TimedRunFailed as exc:
                    err(exc.stderr)
                    return exc.status
            result = core_bench.BenchResult(result.world, result.variant, result.seed, result.scenarios,
                                            result.states, result.targets, paths, threads=result.threads)
    print(core_bench.format_table(result))
    if args.no_record:
        return 0
    out = root / "bench" / f"{world}-{variant}{'-dagster' if args.dagster else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.to_dict() | {"root": str(root)}, indent=2) + "\n")
    print(f"written {out}")
    return 0


def add_parser(sub: argparse._SubParsersAction, err) -> None:
    """`bench [--profile P] [--root DIR] [--count-law L] [--kernel K] [--seed N] [--scenario S] [--dagster]
    [--no-record]`."""
    parser = sub.add_parser("bench", help="time S0-S3 and the audit per state on a world (created if absent)")
    parser.add_argument("--profile", help="world profile, e.g. reference or reference4x (to create it if absent)")
    parser.add_argument("--root", help="run root holding a world (default ./.arrival/<profile>)")
    parser.add_argument("--count-law", choices=("poisson", "nb2"), default="poisson", help="S3 count law (poisson)")
    parser.add_argument("--kernel", help="a stationary latent kernel instead of OU, e.g. matern32_v1")
    parser.add_argument("--seed", default="42", help="seed to realise (42; --dagster also uses seeds + 1, + 2 and + 3)")
    parser.add_argument("--scenario", help="one scenario (default: every scenario of the world)")
    parser.add_argument("--dagster", action="store_true",
                        help="also time the engine as a process of its own for one partition (this command), "
                             "then `arrival run` for it with every check, two at once, and the first one's verified "
                             "re-run, each as a multiple of the engine process")
    parser.add_argument("--no-record", action="store_true",
                        help="print the table only, write no record under <root>/bench")
    add_threads_option(parser)
    parser.set_defaults(handler=lambda args: bench(args, err))
