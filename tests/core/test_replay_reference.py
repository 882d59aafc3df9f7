"""The independent replay reference (`checks/reference.py`): it imports nothing of the engine, and it agrees with the
engine bit for bit — Philox against the known-answer file, streams, normals, every latent model and kernel (coupled
or not), the exact Poisson and NB2 inverses — on fixed keys."""
from __future__ import annotations

import ast
import copy
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from arrival_core import contracts, latent
from arrival_core.checks import reference, reference_loops
from arrival_core.rng import streams, variates

DATA = Path(__file__).resolve().parents[1] / "data"
MF, PH, SEED = "5c" * 32, "e1" * 32, 20260311
KERNELS = ("matern32_v1", "matern52_v1", "squared_exponential_v1", "quasi_periodic_v1")


def test_the_reference_imports_nothing_of_the_engine():
    """Only the standard library, NumPy and numba (its compiled loops): no other arrival_core module (rng, latent,
    kernels, counts or any other)."""
    allowed = {"__future__", "hashlib", "math", "struct", "collections.abc", "numpy", "numba"}
    for module, siblings in ((reference, {"reference_loops"}), (reference_loops, set())):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module is None, f"relative import from {node.module!r}"
                assert {a.name for a in node.names} <= siblings, [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module)
        assert imported <= allowed, imported
        assert not [n for n in imported if n.startswith("arrival_core")]


def test_the_reference_loops_call_the_c_librarys_functions():
    """The compiled ln, cos, sin and exp give, bit for bit, what CPython's `math` (the C library) gives, over the
    ranges the laws feed them: uniforms in (0, 1) near both ends, angles in [0, 2π), the kernels' and factors'
    exponents."""
    rng = np.random.default_rng(20260311)
    u = np.concatenate([rng.random(100_000), 2.0**-53 * np.arange(1, 2000), 1.0 - 2.0**-53 * np.arange(1, 2000)])
    for which, fn, x in ((reference_loops.LN, math.log, u), (reference_loops.COS, math.cos, 2.0 * math.pi * u),
                         (reference_loops.SIN, math.sin, math.pi * rng.random(50_000) * 40.0),
                         (reference_loops.EXP, math.exp, rng.normal(size=100_000) * 8.0)):
        out = np.empty_like(x)
        reference_loops.libm_each(which, x, out)
        want = np.array([fn(v) for v in x.tolist()])
        assert (out.view(np.uint64) == want.view(np.uint64)).all(), fn.__name__


def test_philox_matches_the_known_answer_file():
    rows = [[int(w, 16) for w in line.split()[2:]] for line in (DATA / "philox2x64_10_kat.txt").read_text().splitlines()
            if line.startswith("philox2x64")]
    c0, c1, key, o0, o1 = (np.array(col, dtype=np.uint64) for col in zip(*rows, strict=True))
    x0, x1 = reference.philox(c0, c1, key)
    assert len(rows) >= 3 and (x0 == o0).all() and (x1 == o1).all()
    grid = np.asfortranarray(np.stack([c0, c0 + np.uint64(1)]))  # any memory order, elementwise
    f0, f1 = reference.philox(grid, np.asfortranarray(np.stack([c1, c1])), np.asfortranarray(np.stack([key, key])))
    assert (f0[0] == o0).all() and (f1[0] == o1).all()
    assert (f0[1] == reference.philox(c0 + np.uint64(1), c1, key)[0]).all()


def test_streams_blocks_and_normals_agree_with_the_engine():
    key = "merchant_id=7|legal_country_iso=GB|tzid=Europe/London|channel_group=card_present"
    for coupled in (False, True):
        want = streams.stream_base("S3.bucket_count.v1", MF, PH, SEED, "stress_v1", key, coupled=coupled)
        got = reference.stream_base("5B.arrival.rng.v1", "S3.bucket_count.v1", MF, PH, SEED,
                                    "*" if coupled else "stress_v1", key)
        assert got == want
    k, hi, lo = (np.uint64(v) for v in want)
    offsets = np.array([0, 1, 2**40, 2**64 - 1 - int(lo) + 3], dtype=np.uint64)  # the last one carries into hi
    x0, x1 = streams.blocks(k, hi, lo, offsets)
    r0, r1 = reference.blocks_at(int(k), int(hi), int(lo), offsets)
    assert (x0 == r0).all() and (x1 == r1).all()
    carried = reference.blocks_at(int(k), int(hi) + 1, 0, np.array([2], dtype=np.uint64))  # the last offset's block
    assert (carried[0][0], carried[1][0]) == (r0[-1], r1[-1])
    with pytest.raises(ValueError, match="wraps"):
        reference.blocks_at(int(k), 2**64 - 1, 2**64 - 1, np.array([0, 1], dtype=np.uint64))
    words = np.random.default_rng(5).integers(0, 2**64 - 1, size=(2, 50_000), dtype=np.uint64, endpoint=True)
    assert (reference.normals(*words) == variates.box_muller(*words)).all()


def test_poisson_and_nb2_inverses_agree_with_the_engine():
    rng = np.random.default_rng(11)
    words = rng.integers(0, 2**64 - 1, size=(2, 300), dtype=np.uint64, endpoint=True)
    mu = np.exp(rng.uniform(np.log(1e-6), np.log(1e6), 300))
    kappa = rng.choice([0.5, 2.5, 12.5, 25.0, 200.0], 300)
    poisson = {"count_law_id": "poisson", "max_count_per_bucket": 10**9}
    engine = variates.poisson_inv(mu, variates.u01(words[0]))
    assert (reference.counts(poisson, mu, None, *words) == engine).all()
    nb2 = {**poisson, "count_law_id": "nb2"}
    u0, u1 = variates.u01(words[0]), variates.u01(words[1])
    engine = variates.poisson_inv(variates.gamma_inv(kappa, u0) * mu / kappa, u1)
    assert (reference.counts(nb2, mu, kappa, *words) == engine).all()
    assert reference.poisson_inv(1e7, 0.5) == variates.poisson_inv(1e7, 0.5)
    assert reference.counts({**poisson, "max_count_per_bucket": 5}, np.array([50.0]), None, words[0][:1],
                            words[1][:1])[0] == 5


def _doc(model: str, kernel: str) -> dict:
    doc = yaml.safe_load((contracts.DEFAULT_CONFIG_DIR / "arrival_lgcp_config_5B.yaml").read_text())
    doc = copy.deepcopy(doc)
    doc["latent_model_id"], doc["kernel_id"] = model, kernel
    doc["length_scale_buckets"]["base_by_scenario_band"] = {"baseline": 40.0, "stress": 9.0}
    return doc


GROUPING = pl.DataFrame({
    "group_id": ["stress|nightlife|card_not_present|virtual|zg03|b17", "stress|office_hours|card_present|physical|zg01|b03",
                 "stress|online_24h|card_not_present|virtual|zg02|b11"],
    "scenario_band": ["stress"] * 3, "demand_class": ["nightlife", "office_hours", "online_24h"],
    "channel_group": ["card_not_present", "card_present", "card_not_present"],
    "virtual_band": ["virtual", "physical", "virtual"],
})


@pytest.mark.parametrize("model,kernel", [("log_gaussian_ou_v1", "ou_ar1_buckets_v1"),
                                          ("log_gaussian_iid_v1", "ou_ar1_buckets_v1"),
                                          *(("log_gaussian_stationary_v1", k) for k in KERNELS)])
@pytest.mark.parametrize("coupled", [False, True])
def test_latent_fields_and_factors_agree_with_the_engine_bit_for_bit(model, kernel, coupled):
    doc = _doc(model, kernel)
    policy = latent.parse_lgcp_policy(doc)
    params = latent.group_parameters(GROUPING, policy)
    h = 100
    field = latent.sample_latent(params, policy, h, manifest_fingerprint=MF, parameter_hash=PH, seed=SEED,
                                 scenario_id="stress_v1", coupled=coupled)
    rng_doc = yaml.safe_load((contracts.DEFAULT_CONFIG_DIR / "arrival_rng_policy_5B.yaml").read_text())
    rng_doc["scenario_coupling"] = "common_v1" if coupled else "independent_v1"
    bases = []
    for g, row in enumerate(params.to_dicts()):
        base = reference.stream_base("5B.arrival.rng.v1", latent.FAMILY_ID, MF, PH, SEED,
                                     "*" if coupled else "stress_v1", reference.group_domain_key(rng_doc, row["group_id"]))
        assert base == (int(field.rng_key[g]), int(field.counter_before[0][g]), int(field.counter_before[1][g]))
        z, blocks = reference.latent_group(doc, row, h, base, coupled)
        assert blocks == int(field.blocks[g])
        assert (z == field.latent[g]).all(), (model, kernel, np.abs(z - field.latent[g]).max())
        sigma = reference.group_sigma_length(doc, row)[0]
        assert sigma == field.sigma[g]
        assert (reference.factors(z, sigma, doc) == field.factor[g]).all()
        bases.append(base)
    # Every group at once (how the checks replay their sample): the same values, bit for bit.
    z, blocks = reference.latent_groups(doc, params.to_dicts(), h, np.array(bases, dtype=np.uint64), coupled)
    assert (z == field.latent).all() and (blocks == field.blocks).all()
    assert (reference.factors(z, field.sigma, doc) == field.factor).all()
    if coupled and model == "log_gaussian_stationary_v1":  # the baseline's L 40·m is longer: M_c is its size
        assert (field.blocks >= 2 * 256).all()
