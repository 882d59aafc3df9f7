"""malloc's heaps: a process of the Dagster layer keeps every thread's blocks in config/runtime.yaml's
`malloc_arena_max` heaps (glibc), and passes the bound to the processes it starts unless the user set one.

Each case runs in a fresh interpreter: the bound only holds for heaps made after it, and pytest's own process
made its heaps long ago. Heaps are counted from glibc's `malloc_stats` report ("Arena N:" per heap)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from arrival_core import contracts

# Four threads each hold a fresh 1 MiB block at the same time, so glibc gives each thread a heap of its own unless
# the number of heaps is bounded; then the report of every heap goes to stderr.
_THREADS_ALLOCATE = """
import ctypes, os, sys, threading
{setup}
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
barrier = threading.Barrier(4)
def hold():
    barrier.wait()
    block = libc.malloc(1 << 20)
    barrier.wait()
    libc.free(ctypes.c_void_p(block))
threads = [threading.Thread(target=hold) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(os.environ.get("MALLOC_ARENA_MAX"))
sys.stdout.flush()
libc.malloc_stats()
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")


def _run(setup: str, env: dict[str, str]) -> tuple[str, int]:
    """(what the child printed as $MALLOC_ARENA_MAX, how many heaps its malloc reported)."""
    done = subprocess.run([sys.executable, "-c", _THREADS_ALLOCATE.format(setup=setup)], env=env,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip(), done.stderr.count("Arena ")


def _env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | extra


def test_importing_the_dagster_layer_bounds_the_heaps_of_every_thread():
    bound = contracts.runtime_settings()["malloc_arena_max"]
    assert bound == 1
    printed, heaps = _run("import arrival_assets", _env())
    assert (printed, heaps) == (str(bound), bound)


def test_without_the_bound_each_thread_gets_a_heap_of_its_own():
    """The case above can fail: the same threads in a plain interpreter make more than one heap."""
    printed, heaps = _run("", _env())
    assert printed == "None" and heaps > 1


def test_the_processes_it_starts_inherit_the_bound():
    """A plain interpreter started by a process of the layer (as a run worker is by `arrival run`)."""
    child = _THREADS_ALLOCATE.format(setup="")
    parent = f"import arrival_assets, subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    done = subprocess.run([sys.executable, "-c", parent], env=_env(), capture_output=True, text=True, check=True)
    assert (done.stdout.strip(), done.stderr.count("Arena ")) == ("1", 1)


def test_a_bound_the_user_set_is_kept():
    printed, heaps = _run("import arrival_assets", _env(MALLOC_ARENA_MAX="3"))
    assert printed == "3" and 1 < heaps <= 3


def test_a_broken_runtime_config_leaves_the_heaps_to_the_command_that_reports_it(tmp_path):
    """Importing the layer never fails on config/runtime.yaml: it bounds nothing, and the command reading the
    file then fails with its code (5B.CONTRACT_INVALID naming the file), not a traceback at import."""
    import shutil

    config = tmp_path / "config"
    shutil.copytree(contracts.DEFAULT_CONFIG_DIR, config)
    (config / "runtime.yaml").write_text("chunk_rows: many\n")
    code = (f"import pathlib, arrival_core.contracts as c; c.DEFAULT_CONFIG_DIR = pathlib.Path({str(config)!r}); "
            "import os, arrival_assets; print(os.environ.get('MALLOC_ARENA_MAX')); "
            "from arrival_core.errors import ArrivalError\n"
            "try:\n    c.runtime_settings()\nexcept ArrivalError as e:\n    print(e.code)")
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["None", "5B.CONTRACT_INVALID"], done.stdout + done.stderr


def test_a_run_process_collects_rarely_and_freezes_what_it_loaded():
    """`collect_rarely` sets config/runtime.yaml's collector thresholds, not Python's defaults; `freeze_loaded_objects`
    takes the objects alive when it is called out of the collector's generations (a full collection no longer walks
    them). Each once per process; in a fresh interpreter, as a run's process calls them."""
    code = ("import gc; from arrival_core import memory; got = memory.collect_rarely(); "
            "loaded = [[i] for i in range(50000)]; before = gc.get_freeze_count(); frozen = memory.freeze_loaded_objects(); "
            "print(*gc.get_threshold(), *got, before, frozen - len(loaded), gc.get_freeze_count() == frozen, "
            "memory.collect_rarely() is got, memory.freeze_loaded_objects() == frozen)")
    words = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    want = [str(v) for v in contracts.runtime_settings()["gc_thresholds"]]
    assert words[0:3] == want and words[3:6] == want and want != ["700", "10", "10"], words
    assert words[6] == "0" and int(words[7]) > 0, words  # the 50,000 lists and more were frozen
    assert words[8:] == ["True", "True", "True"], words
