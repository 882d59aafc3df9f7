"""A child process compiles a run's kernels into numba's on-disk cache while the run loads Dagster and runs S0–S1
(numba's compiler holds the GIL, so a thread would only take turns with the run); the run's first kernel call
waits for it (`threads.run_sliced` → `wait`) and then loads the kernels from the cache instead of compiling them.

The child compiles in two phases: the RNG kernels of S2 and S3 first, then says so on its stdout and compiles the
check kernels, which the run needs only after S2; a check kernel's first call waits for the whole child
(`wait(checks=True)`)."""
from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
from pathlib import Path

from .. import contracts

COUNT_POLICY, LGCP_POLICY = "arrival_count_config_5B.yaml", "arrival_lgcp_config_5B.yaml"

RNG_DONE = b"rng kernels compiled\n"  # the child's line between its two phases

_lock = threading.Lock()
_child: subprocess.Popen | None = None
_rng_done = False


def policy_laws(config_dir: Path) -> tuple[str, str]:
    """(count law, latent model) of the policy files in a folder, read by their own parsers."""
    from .. import counts, latent  # the callers of the kernels (the RNG layer itself never imports them)
    from ..contracts import parse_yaml  # within the document limits: a policy is a user's file

    count_policy = counts.parse_count_policy(parse_yaml((config_dir / COUNT_POLICY).read_text()))
    lgcp_policy = latent.parse_lgcp_policy(parse_yaml((config_dir / LGCP_POLICY).read_text()))
    return count_policy.law, lgcp_policy.latent_model_id


def rng_kernels(count_law: str, latent_model: str) -> list:
    """The RNG kernels a run of this law and model calls from Python (S2, S3 and the replays; callees compile into
    them)."""
    from .. import counts
    from . import gamma_kernels, normal_kernels, poisson_kernels, streams, variates

    used = [streams._blocks_slice, counts._count_blocks_slice, poisson_kernels._poisson_inv_slice]
    if latent_model != "none":
        used.append(normal_kernels._box_muller_slice)
    if count_law == "nb2":
        used += [variates._factorize_small, gamma_kernels.gamma_table, gamma_kernels._gamma_inv_table_slice]
    return used


def check_kernels() -> list:
    """The kernels of the checks (the same for every law and model)."""
    from ..checks import count_kernels, event_kernels, intensity_kernels

    return [count_kernels._moment_sums, event_kernels._event_mismatches, intensity_kernels._realised_mismatches]


def cached(kernel: object) -> bool:
    """Whether numba's on-disk cache holds a fresh index for a kernel (numba's internals: False when in doubt)."""
    try:
        return bool(kernel._cache._cache_file._load_index())
    except Exception:  # noqa: BLE001 - numba's cache internals differ: treat the kernel as not cached
        return False


def compile_rng_kernels(count_law: str, latent_model: str) -> None:
    """Call each of `rng_kernels` through the run's own function, on two elements of the run's types: its
    signatures."""
    import numpy as np

    from .. import counts
    from . import streams, variates

    words = np.arange(1, 3, dtype=np.uint64)
    x0, x1 = streams.blocks(words, words, words, words)
    if latent_model != "none":
        variates.box_muller(x0, x1)
    policy = counts.CountPolicy(version="warmup", law=count_law, lambda_zero_eps=0.0, max_count=1, kappa_base={},
                                kappa_demand={}, kappa_bounds=(1.0, 1.0))
    counts.draw_counts(np.ones(2), np.arange(2), np.zeros(2, dtype=np.int32), (words, words, words),
                       np.ones(2) if count_law == "nb2" else None, policy)


def compile_check_kernels() -> None:
    """Call each of `check_kernels` through its wrapper (which fixes the argument types) on a few elements."""
    import numpy as np

    from ..checks import count_kernels, event_kernels, intensity_kernels

    words = np.arange(1, 3, dtype=np.uint64)
    count_kernels.moment_sums(np.ones(2), np.ones(2), None)
    index, codes = np.zeros(2, dtype=np.int64), np.zeros((3, 2), dtype=np.int32)
    event_kernels.event_mismatches(index, index, words, codes, words, words, words, index.astype(np.int32), words,
                                   codes, *(words,) * 5, index, index, draws=1)
    intensity_kernels.realised_mismatches(np.ones(2), np.ones(2), np.ones(2), np.ones(2), 0.0, 1.0, None, None,
                                          np.zeros(1, dtype=np.int32), 2)


def start(config_dir: str | os.PathLike | None = None) -> None:
    """Start a child compiling the kernels of the policies in `config_dir` unless numba's cache has them all."""
    global _child, _rng_done
    try:
        laws = policy_laws(Path(config_dir) if config_dir else contracts.DEFAULT_CONFIG_DIR)
    except Exception:  # noqa: BLE001 - only a head start: the run reports a bad policy with its own code
        return
    rng_cached = all(cached(kernel) for kernel in rng_kernels(*laws))
    if rng_cached and all(cached(kernel) for kernel in check_kernels()):
        return
    with _lock:
        if _child is None:
            _rng_done = rng_cached
            _child = subprocess.Popen([sys.executable, "-m", __name__, *laws], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def wait(*, checks: bool = False) -> None:
    """Let a compiling child finish its RNG kernels (or, with `checks`, all of them) before this process calls a
    kernel, so that it loads instead of compiling; a child still compiling after `warmup_wait_seconds` is left
    to finish alone and the run compiles for itself."""
    global _child, _rng_done
    if _child is None or (_rng_done and not checks):
        return
    timeout = contracts.runtime_settings()["warmup_wait_seconds"]
    with _lock:
        child = _child
        if child is None:
            return
        if not checks:
            if not _rng_done:
                ready, _, _ = select.select([child.stdout], [], [], timeout)
                if ready:
                    child.stdout.readline()  # the phase line, or b"" when the child ended without it
                _rng_done = True
            return
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        child.stdout.close()
        _child = None


def stop() -> None:
    """End a child still compiling when the command is done (it needed none of the kernels)."""
    global _child
    with _lock:
        child, _child = _child, None
    if child is not None:
        if child.poll() is None:
            child.terminate()
            child.wait()
        child.stdout.close()


if __name__ == "__main__":
    try:
        compile_rng_kernels(*sys.argv[1:3])
        sys.stdout.buffer.write(RNG_DONE)
        sys.stdout.flush()
        compile_check_kernels()
    except (Exception, KeyboardInterrupt):  # noqa: BLE001 - the run compiles whatever is missing itself
        sys.exit(1)
