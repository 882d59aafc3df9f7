"""The warm-up child runs the phases it is told in order and says when each is done; a run waits for a phase, not
for a clock, gives up after the configured wait, and ends a child it no longer needs."""
from __future__ import annotations

from pathlib import Path

import numba
import pytest

from arrival_core import checks, contracts, pipeline, warmup


@pytest.fixture(autouse=True)
def _no_child_left():
    yield
    warmup.stop()


def _mkdir(name: str, folder: Path) -> warmup.Phase:
    """A phase whose work leaves a mark: it creates `folder`; it names a kernel that is not cached."""
    return warmup.Phase(name, "os:mkdir", (str(folder),), kernels=(object(),))


def test_wait_returns_only_after_the_phase_has_run(tmp_path):
    warmup.start([_mkdir("first", tmp_path / "first"), _mkdir("second", tmp_path / "second")])
    warmup.wait("first")
    assert (tmp_path / "first").is_dir()
    warmup.wait("second")
    assert (tmp_path / "second").is_dir()
    assert warmup._child is None  # its last phase done, the child was waited for


def test_phases_whose_kernels_are_all_cached_start_no_child(tmp_path):
    warmup.start([warmup.Phase("cached", "os:mkdir", (str(tmp_path / "x"),), kernels=())])
    assert warmup._child is None
    warmup.wait("cached")
    assert not (tmp_path / "x").exists()


def test_a_failing_phase_ends_the_child_and_the_run_goes_on(tmp_path):
    warmup.start([warmup.Phase("broken", "os:no_such_function", kernels=(object(),)),
                  _mkdir("after", tmp_path / "after")])
    warmup.wait("after")
    assert warmup._child is None
    assert not (tmp_path / "after").exists()  # the child stopped at the failing phase


def test_a_phase_still_compiling_after_the_configured_wait_is_left_to_finish_and_stop_ends_it(monkeypatch):
    monkeypatch.setattr(contracts, "runtime_settings", lambda: {"warmup_wait_seconds": 0.05})
    warmup.start([warmup.Phase("slow", "time:sleep", (600,), kernels=(object(),))])
    child = warmup._child
    warmup.wait("slow")
    assert child.poll() is None  # still sleeping: the run went on without it
    warmup.stop()
    assert child.poll() is not None and warmup._child is None


def test_the_pipeline_and_the_checks_name_compiled_kernels_and_importable_compilers():
    phases = pipeline.warmup_phases(contracts.DEFAULT_CONFIG_DIR) + checks.warmup_phases()
    assert [p.name for p in phases] == [pipeline.compiling.PHASE, checks.compiled.PHASE]
    assert phases[0].args == pipeline.compiling.policy_laws(contracts.DEFAULT_CONFIG_DIR)
    for phase in phases:
        module, function = phase.target.split(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function))
        assert phase.kernels and all(isinstance(k, numba.core.registry.CPUDispatcher) for k in phase.kernels)


def test_unreadable_policies_give_no_rng_phase(tmp_path):
    assert pipeline.warmup_phases(tmp_path) == ()
