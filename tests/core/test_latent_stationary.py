"""S2 `log_gaussian_stationary_v1`: the field drawn through `latent.sample_latent` against the law of laws §8.1
computed here independently (test-local ρ, doubling, Box–Muller and NumPy FFT), its RNG event costs, the
KERNEL_CONSTRUCTION_FAILED failure, the policy block and the whitened latent corridor.

Statistical tests use fixed keys; each states its false-failure probability.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import polars as pl
import pytest
import yaml

from arrival_core import contracts, latent
from arrival_core.checks.intensity import spectral_corridor, stationary_projections
from arrival_core.errors import ArrivalError
from arrival_core.rng import ledger, philox, streams, variates

MF, PH, SEED, SID = "5c" * 32, "e1" * 32, 20260311, "baseline_v1"
P, ELL = 24.0, 1.0  # period_buckets, periodic_length (the defaults)
KERNELS = ("matern32_v1", "matern52_v1", "squared_exponential_v1", "quasi_periodic_v1")

# Test-local ρ(τ; L), written from the table of laws §8.1 (d = τ/L) independently of arrival_core.kernels.
# They are evaluated as the table writes them, in d: the squared exponential's spectrum falls below rounding
# within M/4 frequencies, and √λ of a rounding-level eigenvalue is ~1e-8, so an algebraically equal but
# differently rounded ρ (e.g. τ²/(2L²) for d²/2) moves its field by ~1e-8 — the law is exact in distribution,
# and its bytes are those of the formulas as written.
EXP, SIN = np.vectorize(math.exp), np.vectorize(math.sin)  # the C library's, element by element (laws §8.1)
RHO = {
    "matern32_v1": lambda t, L: (1.0 + math.sqrt(3.0) * (t / L)) * EXP(-math.sqrt(3.0) * (t / L)),
    "matern52_v1": lambda t, L: (1.0 + math.sqrt(5.0) * (t / L) + 5.0 * (t / L) ** 2 / 3.0)
    * EXP(-math.sqrt(5.0) * (t / L)),
    "squared_exponential_v1": lambda t, L: EXP(-((t / L) ** 2) / 2.0),
    "quasi_periodic_v1": lambda t, L: EXP(-2.0 * SIN(np.pi * t / P) ** 2 / ELL**2) * EXP(-t / L),
}


def _doc(**stationary) -> dict:
    doc = yaml.safe_load((contracts.DEFAULT_CONFIG_DIR / "arrival_lgcp_config_5B.yaml").read_text())
    if stationary:
        doc["stationary"] = stationary
    return doc


def _policy(kernel: str, **stationary) -> latent.LgcpPolicy:
    doc = _doc(**stationary)
    doc["latent_model_id"], doc["kernel_id"] = "log_gaussian_stationary_v1", kernel
    return latent.parse_lgcp_policy(doc)


def _params(rows: list[tuple[str, float, float]]) -> pl.DataFrame:
    """(group_id, σ, L) rows, as group_parameters gives them (group_id order)."""
    frame = pl.DataFrame(rows, schema={"group_id": pl.String, "sigma": pl.Float64,
                                       "length_scale_buckets": pl.Float64}, orient="row").sort("group_id")
    return frame.with_columns((-1.0 / pl.col("length_scale_buckets")).exp().alias("phi"))


GROUPS = _params([
    ("baseline|office_hours|card_present|physical|zg01|b03", 0.153, 15.0),
    ("baseline|retail_daytime|card_present|physical|zg07|b00", 0.18, 12.0),
    ("baseline|retail_daytime|card_not_present|virtual|zg02|b11", 0.2277, 12.0),  # shares L with the one above
    ("stress|nightlife|card_not_present|virtual|zg03|b17", 0.9, 4.2),
])


def _law(kernel: str, length: float, h: int, tol: float = 1e-10, factor: float = 8.0):
    """(M, clipped λ) by the doubling of laws §8.1 steps 1–5, or (M, None, negative mass) when it fails."""
    m = 1 if h == 1 else 1 << (2 * (h - 1) - 1).bit_length()
    last = m
    while h > 1 and 2 * last <= factor * 2 * (h - 1):
        last *= 2
    while True:
        k = np.arange(m, dtype=np.float64)
        lam = np.fft.fft(RHO[kernel](np.minimum(k, m - k), length)).real
        if lam.min() >= -tol * lam.max():
            return m, np.maximum(lam, 0.0)
        if m >= last:
            return m, None, float(-lam[lam < 0].sum() / np.abs(lam).sum())
        m *= 2


def _normals(key: int, hi: int, lo: int, count: int) -> np.ndarray:
    """Box–Muller (cosine) of blocks 0..count−1 of one stream, from the raw words (laws §7.4–7.5)."""
    x0, x1 = streams.blocks(np.full(count, key, dtype=np.uint64), np.full(count, hi, dtype=np.uint64),
                            np.full(count, lo, dtype=np.uint64), np.arange(count, dtype=np.uint64))
    u0 = (((x0 >> np.uint64(11)) | np.uint64(1)).astype(np.float64)) * 2.0**-53
    u1 = (((x1 >> np.uint64(11)) | np.uint64(1)).astype(np.float64)) * 2.0**-53
    return np.sqrt(-2.0 * np.log(u0)) * np.cos(2.0 * np.pi * u1)


def _direct(kernel: str, params: pl.DataFrame, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Z (G×H) and M per group straight from the law: z1 = blocks 0..M−1, z2 = blocks M..2M−1,
    Z = σ · Re(FFT(√(λ/M) ⊙ (z1 + i z2)))[0:H]."""
    keys = [f"group_id={g}" for g in params["group_id"]]
    key, hi, lo = streams.stream_bases(latent.FAMILY_ID, MF, PH, SEED, SID, keys)
    out, sizes = np.empty((params.height, h)), np.empty(params.height, dtype=np.int64)
    for g, (sigma, length) in enumerate(zip(params["sigma"], params["length_scale_buckets"], strict=True)):
        m, lam = _law(kernel, length, h)[:2]
        z = _normals(int(key[g]), int(hi[g]), int(lo[g]), 2 * m)
        out[g] = sigma * np.fft.fft(np.sqrt(lam / m) * (z[:m] + 1j * z[m:])).real[:h]
        sizes[g] = m
    return out, sizes


def _sample(kernel: str, params: pl.DataFrame, h: int, **kw) -> latent.LatentField:
    return latent.sample_latent(params, _policy(kernel), h, manifest_fingerprint=MF, parameter_hash=PH, seed=SEED,
                                scenario_id=SID, **kw)


# ---------------------------------------------------------------- the field against its law


@pytest.mark.parametrize("h", [168, 45, 1])
@pytest.mark.parametrize("kernel", KERNELS)
def test_sample_latent_reproduces_the_documented_law(kernel, h):
    field = _sample(kernel, GROUPS, h)
    expected, sizes = _direct(kernel, GROUPS, h)
    assert field.latent.shape == (GROUPS.height, h)
    for g in range(GROUPS.height):
        scale = np.abs(expected[g]).max()
        assert np.abs(field.latent[g] - expected[g]).max() <= 1e-12 * scale, (kernel, h, g)
    np.testing.assert_array_equal(field.embedding_sizes, sizes)
    sigma = GROUPS["sigma"].to_numpy()[:, None]
    policy = _policy(kernel)
    np.testing.assert_array_equal(field.factor, np.clip(variates.exp(field.latent - sigma * sigma / 2),
                                                        policy.min_factor, policy.max_factor))


@pytest.mark.parametrize("kernel", KERNELS)
def test_one_event_per_group_with_4m_draws_and_2m_blocks(kernel):
    h = 168
    field = _sample(kernel, GROUPS, h)
    _, sizes = _direct(kernel, GROUPS, h)
    key, hi, lo = streams.stream_bases(latent.FAMILY_ID, MF, PH, SEED, SID,
                                       [f"group_id={g}" for g in GROUPS["group_id"]])
    assert field.events == GROUPS.height
    np.testing.assert_array_equal(field.blocks, 2 * sizes)
    np.testing.assert_array_equal(field.draws, 4 * sizes)
    np.testing.assert_array_equal(field.rng_key, key)
    assert (field.counter_before[0] == hi).all() and (field.counter_before[1] == lo).all()
    after_hi, after_lo, _ = philox.add_counter(hi, lo, (2 * sizes).astype(np.uint64))
    assert (field.counter_after[0] == after_hi).all() and (field.counter_after[1] == after_lo).all()
    metrics = field.embedding_metrics()
    assert metrics["latent_embedding_sizes"] == sorted(set(sizes.tolist()))
    assert metrics["latent_embedding_largest_clipped"] >= 0.0


def test_a_group_drawn_alone_gives_the_same_bytes():
    """Replaying a sample of groups must reproduce the published values exactly, not closely."""
    whole = _sample("matern52_v1", GROUPS, 168)
    part = _sample("matern52_v1", GROUPS[[3, 1]], 168)
    assert np.array_equal(part.latent, whole.latent[[3, 1]])
    assert np.array_equal(part.factor, whole.factor[[3, 1]])


def test_trace_of_events_of_different_sizes_sums_each_append():
    blocks = np.array([1024, 1024, 2048, 512, 1024], dtype=np.int64)
    trace = ledger.trace_frame(5, 2 * blocks, blocks, append_events=2)
    assert trace["events"].to_list() == [2, 2, 1]
    assert trace["blocks"].to_list() == [2048, 2560, 1024]
    assert trace["draws_total"].to_list() == [4096, 9216, 11264]
    assert ledger.trace_problems(trace, append_events=2) == []
    with pytest.raises(ValueError, match="per-event costs"):
        ledger.trace_frame(4, 2 * blocks, blocks, append_events=2)


# ---------------------------------------------------------------- failure and policy


def test_a_kernel_that_cannot_be_embedded_is_kernel_construction_failed_naming_group_kernel_l_and_mass():
    group = "baseline|retail_daytime|card_present|physical|zg07|b00"
    params = _params([(group, 0.18, 24.0), ("baseline|office_hours|card_present|physical|zg01|b03", 0.15, 3.0)])
    policy = _policy("squared_exponential_v1", max_embedding_factor=1)
    m, lam, mass = _law("squared_exponential_v1", 24.0, 48, factor=1.0)
    assert lam is None and m == 128
    with pytest.raises(ArrivalError) as err:
        latent.sample_latent(params, policy, 48, manifest_fingerprint=MF, parameter_hash=PH, seed=SEED,
                             scenario_id=SID)
    e = err.value
    assert e.code == "5B.S2.KERNEL_CONSTRUCTION_FAILED"
    assert group in e.message and "squared_exponential_v1" in e.message and "L=24.0" in e.message
    assert "M=128" in e.message and "negative eigenvalue mass" in e.message
    assert (e.context["group_id"], e.context["kernel_id"], e.context["length_scale_buckets"]) == (group,
                                                                                                  "squared_exponential_v1",
                                                                                                  24.0)
    assert e.context["negative_mass"] == pytest.approx(mass, rel=1e-9) and e.context["negative_mass"] > 0
    with pytest.raises(ArrivalError) as again:
        latent.event_blocks(params, policy, 48)
    assert again.value.code == "5B.S2.KERNEL_CONSTRUCTION_FAILED"


def test_the_shipped_config_has_default_stationary_settings_and_a_block_overrides_them():
    shipped = latent.parse_lgcp_policy(_doc())
    assert shipped.stationary == latent.StationarySettings(1e-10, 8.0, 24.0, 1.0)
    assert shipped.latent_model_id == "log_gaussian_ou_v1" and shipped.kernel_id == "ou_ar1_buckets_v1"
    custom = _policy("quasi_periodic_v1", period_buckets=168, max_embedding_factor=2)
    assert custom.stationary == latent.StationarySettings(1e-10, 2.0, 168.0, 1.0)


def test_stationary_needs_one_of_the_four_kernels():
    with pytest.raises(ArrivalError) as err:
        _policy("ou_ar1_buckets_v1")
    assert err.value.code == "5B.S2.LGCP_CONFIG_INVALID" and "matern32_v1" in err.value.message


def test_schema_accepts_the_stationary_model_and_block_and_refuses_a_bad_block():
    ref = contracts.dataset("arrival_lgcp_config_5B").schema_ref
    doc = _doc(embedding_tolerance=1e-8, max_embedding_factor=4, period_buckets=24, periodic_length=0.5)
    doc["latent_model_id"], doc["kernel_id"] = "log_gaussian_stationary_v1", "matern52_v1"
    contracts.validate_document(doc, ref, code="5B.S2.LGCP_CONFIG_INVALID", where="lgcp")
    contracts.validate_document(_doc(), ref, code="5B.S2.LGCP_CONFIG_INVALID", where="lgcp")  # block absent
    for change in ({"embedding_tolerance": 1.0}, {"max_embedding_factor": 0.5}, {"period_buckets": 0},
                   {"bandwidth": 3}):
        bad = copy.deepcopy(doc)
        bad["stationary"] |= change
        with pytest.raises(ArrivalError) as err:
            contracts.validate_document(bad, ref, code="5B.S2.LGCP_CONFIG_INVALID", where="lgcp")
        assert err.value.code == "5B.S2.LGCP_CONFIG_INVALID", change


# ---------------------------------------------------------------- the whitened corridor


def _many_groups(n: int) -> pl.DataFrame:
    rng = np.random.default_rng(5)
    lengths = np.array([4.2, 6.0, 9.0, 12.0, 15.0])
    rows = [(f"baseline|retail_daytime|card_present|physical|zg{i // 100:02d}|b{i % 100:02d}",
             float(rng.uniform(0.1, 0.6)), float(lengths[i % len(lengths)])) for i in range(n)]
    return _params(rows)


@pytest.mark.parametrize("kernel", KERNELS)
def test_spectral_corridor_accepts_fields_of_the_law_and_rejects_a_wrong_sigma_or_length_scale(kernel):
    # Fixed key. Acceptance: the corridor's false alarm is ≤ 1e-6, so this fails for at most a 1e-6 share of keys.
    # Rejection: σ understated by 5% puts Σy² at 1.1025·n against an upper bound n + 2√(nx) + 2x; with n ≥ 15,000
    # projections (the squared exponential keeps ≥ 28 per group over 168 buckets) the excess is ≥ 2.8 sd of Q beyond
    # the bound for the squared exponential and ≥ 11 sd for the others (measured on this key); half the length
    # scale moves both statistics by many bounds.
    params, h = _many_groups(300), 168
    policy = _policy(kernel)
    field = latent.sample_latent(params, policy, h, manifest_fingerprint=MF, parameter_hash=PH, seed=SEED,
                                 scenario_id=SID)
    sigma = params["sigma"].to_numpy()
    stats = spectral_corridor(stationary_projections(field.latent, sigma, params, policy, h), 1e-6)
    assert stats["variance_ok"] and stats["tilt_ok"], stats
    assert stats["directions"] >= 300 * 28
    wrong = params.with_columns(pl.col("length_scale_buckets") / 2)
    bad = spectral_corridor(stationary_projections(field.latent, sigma, wrong, policy, h), 1e-6)
    assert not (bad["variance_ok"] and bad["tilt_ok"]), bad
    scaled = spectral_corridor(stationary_projections(field.latent * 1.05, sigma, params, policy, h), 1e-6)
    assert not scaled["variance_ok"], scaled


def test_spectral_projections_are_the_eigen_whitening_of_the_realised_covariance():
    """y = Λ^{-1/2} Uᵀ w for a 2-bucket field with known covariance [[1, ρ], [ρ, 1]]: eigenvalues 1 ± ρ."""
    policy = _policy("matern32_v1")
    params = _params([("baseline|retail_daytime|card_present|physical|zg07|b00", 1.0, 3.0)])
    emb = latent.group_embeddings(params, policy, 2).embeddings[0]
    rho = float(np.fft.ifft(emb.eigenvalues).real[1])
    w = np.array([[0.3, -1.2]])
    y = stationary_projections(w, np.ones(1), params, policy, 2)[0]
    expected = [(0.3 + -1.2) / math.sqrt(2 * (1 + rho)), (0.3 - -1.2) / math.sqrt(2 * (1 - rho))]
    np.testing.assert_allclose(np.sort(np.abs(y[0])), np.sort(np.abs(expected)), rtol=1e-12)


def test_spectral_corridor_bounds_follow_laurent_massart_and_the_signed_sub_gamma_bound():
    e = np.random.default_rng(11).standard_normal((40, 50))
    stats = spectral_corridor([e[:20], e[20:, :31]], 1e-6)
    n, x = 20 * 50 + 20 * 31, math.log(4e6)
    weight = 20 * 50 + 20 * 30  # ±1 on the first and last ⌊n/2⌋ of each row; the middle of an odd row has 0
    assert stats["directions"] == n
    assert stats["sum_sq_low"] == pytest.approx(n - 2 * math.sqrt(n * x))
    assert stats["sum_sq_high"] == pytest.approx(n + 2 * math.sqrt(n * x) + 2 * x)
    assert stats["tilt_bound"] == pytest.approx(2 * math.sqrt(weight * x) + 2 * x)
    tilt = ((e[:20, :25] ** 2 - 1).sum() - (e[:20, 25:] ** 2 - 1).sum() + (e[20:, :15] ** 2 - 1).sum()
            - (e[20:, 16:31] ** 2 - 1).sum())
    assert stats["tilt_stat"] == pytest.approx(tilt)
    assert stats["variance_ok"] and stats["tilt_ok"]  # false-failure probability ≤ 1e-6 for this fixed key
