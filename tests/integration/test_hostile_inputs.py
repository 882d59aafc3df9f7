"""Hostile and damaged inputs: each is refused with its code within a bounded time and memory, or healed.

The alias bomb and the embedding bound run in a child process under RLIMIT_AS and a timeout set by the test
itself: before the fix the first expanded a billion values and the second drew hundreds of millions of normals,
so the child is killed (or runs out of memory) instead of reporting the code.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from arrival_core import contracts, pipeline
from arrival_core.errors import ArrivalError
from arrival_core.identity import PartitionKey
from arrival_core.pipeline import records
from arrival_core.store import Store
from arrival_core.world import WorldInfo

KEY = PartitionKey(42, "baseline_v1")
REUSE = pipeline.RunOptions(reuse=True)

CHILD_MEMORY_BYTES = 3 << 30  # address space of the bounded child (the engine's imports need about 1.5 GiB)
CHILD_SECONDS = 240  # far above what a coded refusal takes on a loaded 2-core machine, far below a bomb's run


def _bounded_child(script: str) -> dict:
    """Run `script` (which prints one JSON line last) in a child limited to CHILD_MEMORY_BYTES of address space
    and CHILD_SECONDS; return its JSON, or fail naming how the child ended."""
    prelude = textwrap.dedent(f"""
        import json, resource
        resource.setrlimit(resource.RLIMIT_AS, ({CHILD_MEMORY_BYTES}, {CHILD_MEMORY_BYTES}))
    """)
    try:
        done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script)], check=False,
                              capture_output=True,
                              text=True, timeout=CHILD_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child did not finish within {CHILD_SECONDS} s")
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"child ended with {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(lines[-1])


def _config_copy(tmp_path: Path) -> Path:
    config = tmp_path / "config"
    shutil.copytree(contracts.DEFAULT_CONFIG_DIR, config)
    return config


ALIAS_BOMB = "bomb_0: &b0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"bomb_{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 10)}]\n" for i in range(1, 10)
)  # nine levels of ten aliases: a billion strings once expanded, 1 kB on disk


def test_alias_bomb_in_a_policy_is_refused_within_bounds(tiny_world_copy: WorldInfo, tmp_path: Path):
    config = _config_copy(tmp_path)
    policy = config / "arrival_lgcp_config_5B.yaml"
    policy.write_text(policy.read_text() + ALIAS_BOMB)
    found = _bounded_child(f"""
        from pathlib import Path
        from arrival_core import pipeline
        from arrival_core.errors import ArrivalError
        from arrival_core.identity import PartitionKey
        from arrival_core.store import Store
        try:
            pipeline.run_s0(Store(run_root=Path({str(tiny_world_copy.root)!r}), config_dir=Path({str(config)!r})),
                            PartitionKey(42, "baseline_v1"))
            print(json.dumps({{"code": None}}))
        except ArrivalError as err:
            print(json.dumps({{"code": err.code, "message": err.message}}))
    """)
    assert found["code"] == "5B.S0.POLICY_INVALID"
    assert "arrival_lgcp_config_5B.yaml" in found["message"] and "expands to more than" in found["message"]


def test_recursive_alias_in_a_policy_is_refused(tiny_world_copy: WorldInfo, tmp_path: Path):
    config = _config_copy(tmp_path)
    policy = config / "arrival_count_config_5B.yaml"
    policy.write_text(policy.read_text() + "loop: &loop [*loop]\n")
    with pytest.raises(ArrivalError) as err:
        pipeline.run_s0(Store(run_root=tiny_world_copy.root, config_dir=config), KEY)
    assert err.value.code == "5B.S0.POLICY_INVALID" and "refers to itself" in err.value.message


@pytest.mark.parametrize("depth", [200_000, 100])
def test_deeply_nested_run_receipt_is_invalid_not_a_crash(tiny_world_copy: WorldInfo, depth: int):
    (tiny_world_copy.root / "run_receipt.json").write_text("[" * depth + "]" * depth)
    with pytest.raises(ArrivalError) as err:
        pipeline.run_s0(Store(run_root=tiny_world_copy.root), KEY)
    assert err.value.code == "5B.S0.RUN_RECEIPT_INVALID"
    assert "run_receipt.json" in err.value.message and "nest" in err.value.message


def _long_range_kernel(config: Path, factor: float) -> None:
    """A squared-exponential kernel with L = 10⁶ buckets: no embedding is ever non-negative, so M doubles to the
    largest size the factor allows."""
    path = config / "arrival_lgcp_config_5B.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["latent_model_id"] = "log_gaussian_stationary_v1"
    doc["kernel_id"] = "squared_exponential_v1"
    doc["stationary"] = {"embedding_tolerance": 1e-10, "max_embedding_factor": factor, "period_buckets": 24,
                         "periodic_length": 1.0}
    doc["length_scale_buckets"]["base_by_scenario_band"] = {"baseline": 1_000_000, "stress": 1_000_000}
    doc["length_scale_buckets"]["bounds"] = [1, 1_000_000]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.parametrize(("factor", "code"), [(1e9, "5B.S0.POLICY_INVALID"),
                                              (64, "5B.S2.KERNEL_CONSTRUCTION_FAILED")])
def test_embedding_size_is_bounded(tiny_world_copy: WorldInfo, tmp_path: Path, factor: float, code: str):
    """A factor past the schema's maximum is refused by S0; the largest allowed one fails S2 with its code after
    a bounded number of doublings, within the child's memory and time."""
    config = _config_copy(tmp_path)
    _long_range_kernel(config, factor)
    found = _bounded_child(f"""
        from pathlib import Path
        from arrival_core import pipeline
        from arrival_core.errors import ArrivalError
        from arrival_core.identity import PartitionKey
        from arrival_core.store import Store
        store = Store(run_root=Path({str(tiny_world_copy.root)!r}), config_dir=Path({str(config)!r}))
        try:
            for runner in (pipeline.run_s0, pipeline.run_s1, pipeline.run_s2):
                runner(store, PartitionKey(42, "baseline_v1"))
            print(json.dumps({{"code": None}}))
        except ArrivalError as err:
            print(json.dumps({{"code": err.code, "message": err.message}}))
    """)
    assert found["code"] == code, found
    if code.endswith("POLICY_INVALID"):
        assert "max_embedding_factor" in found["message"]


# ---- damaged records: schema-validated on read, replaced once their files are proved again ---------------------

def _s1_materialised(world: WorldInfo) -> tuple[Store, object]:
    store = Store(run_root=world.root)
    pipeline.run_s0(store, KEY, REUSE)
    result = pipeline.run_s1(store, KEY, REUSE)
    return store, result.identity


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _lie_about_a_digest(path: Path) -> None:
    record = json.loads(path.read_bytes())
    record["files"][0]["sha256"] = "0" * 64
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("damage", [_truncate, _lie_about_a_digest])
def test_damaged_commit_record_costs_one_recomputation_then_is_replaced(tiny_world_copy: WorldInfo, damage):
    store, identity = _s1_materialised(tiny_world_copy)
    path = records.commit_path(store, "S1", identity)
    good = path.read_bytes()
    damage(path)
    again = pipeline.run_s1(store, KEY, REUSE)
    assert not again.report["metrics"].get("verified")  # the damaged record proved nothing: S1 computed
    assert path.read_bytes() == good  # ... and its record was replaced by the true one
    third = pipeline.run_s1(store, KEY, REUSE)
    assert third.report["metrics"].get("verified") is True
    assert not list(path.parent.glob(".*.tmp-*"))


def _extra_key(record: dict) -> None:
    record["outcomes"][0]["extra"] = 1


def _no_outcomes(record: dict) -> None:
    record["outcomes"] = []


def _outcome_of_another_step(record: dict) -> None:
    record["outcomes"][0]["name"] = "not_a_check_of_this_step"


@pytest.mark.parametrize("damage", [_extra_key, _no_outcomes, _outcome_of_another_step])
def test_damaged_check_record_is_evaluated_again_and_replaced(tiny_world_copy: WorldInfo, damage):
    from arrival_core import checks

    store, identity = _s1_materialised(tiny_world_copy)
    names = sorted(spec.name for spec in checks.checks_for("s1_time_grid_5B"))
    first, _ = checks.evaluate_recorded(store, identity, "s1_time_grid_5B", state="S1", recall=True)
    basis = pipeline.check_basis(store, identity, upto="S1")
    path = records.check_record_path(store, "s1_time_grid_5B", identity, basis)
    good = path.read_bytes()
    record = json.loads(good)
    damage(record)
    path.write_text(json.dumps(record))
    outcomes, recalled = checks.evaluate_recorded(store, identity, "s1_time_grid_5B", state="S1", recall=True)
    assert not recalled and sorted(o.name for o in outcomes) == names and all(o.passed for o in outcomes)
    assert path.read_bytes() == good
    outcomes, recalled = checks.evaluate_recorded(store, identity, "s1_time_grid_5B", state="S1", recall=True)
    assert recalled and outcomes == first
