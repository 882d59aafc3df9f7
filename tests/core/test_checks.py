"""The check catalogue and its statistical corridors on synthetic data with fixed keys."""
from __future__ import annotations

import math

import numpy as np
import pytest

from arrival_core import checks, contracts
from arrival_core.checks import CHECKS, checks_for


def test_every_output_dataset_has_checks_and_only_outputs_do():
    outputs = {e.id for e in contracts.load_dictionary().values() if e.kind == "output"}
    assert {s.dataset_id for s in CHECKS} == outputs


def test_check_names_are_unique_per_asset_and_identifiers():
    seen = set()
    for spec in CHECKS:
        asset = contracts.dataset(spec.dataset_id).companion_of or spec.dataset_id  # a trace: its events' asset
        assert (asset, spec.name) not in seen, (asset, spec.name)
        seen.add((asset, spec.name))
        assert spec.name.isidentifier() and spec.description


def test_error_checks_block_and_corridors_warn_with_their_false_alarm_rate():
    for spec in CHECKS:
        assert spec.severity in ("ERROR", "WARN")
        assert spec.blocking == (spec.severity == "ERROR")
        if spec.severity == "WARN":
            assert spec.name in (checks.LATENT_CORRIDOR, checks.COUNT_CORRIDOR) and "1e-6" in spec.description
    for dataset_id in ("s2_realised_intensity_5B", "s3_bucket_counts_5B", "rng_event_arrival_bucket_count"):
        names = {s.name for s in checks_for(dataset_id)}
        assert {checks.SCHEMA_VALID, checks.PRIMARY_KEY_UNIQUE, checks.RNG_REPLAY} <= names


def test_unknown_dataset_or_replay_mode_is_refused():
    with pytest.raises(ValueError):
        checks.evaluate(None, None, "merchant_zone_profile_5A")
    with pytest.raises(ValueError):
        checks.evaluate(None, None, "s3_bucket_counts_5B", replay="most")


def _ou(rng: np.random.Generator, sigma: np.ndarray, phi: np.ndarray, h: int) -> np.ndarray:
    z = rng.standard_normal((len(sigma), h))
    out = np.empty_like(z)
    out[:, 0] = sigma * z[:, 0]
    for t in range(1, h):
        out[:, t] = phi * out[:, t - 1] + sigma * np.sqrt(1 - phi * phi) * z[:, t]
    return out


def test_latent_corridor_accepts_its_model_and_rejects_a_wrong_sigma_or_phi():
    # Fixed key: the corridor's false alarm is ≤ 1e-6, so this passes for all but a 1e-6 share of keys.
    rng = np.random.default_rng(20260323)
    sigma = rng.uniform(0.1, 0.5, 300)
    phi = np.exp(-1.0 / rng.uniform(4, 20, 300))
    z = _ou(rng, sigma, phi, 500)
    assert checks.latent_corridor(z, sigma, phi, 1e-6)["variance_ok"]
    assert checks.latent_corridor(z, sigma, phi, 1e-6)["lag1_ok"]
    assert not checks.latent_corridor(z, sigma * 1.15, phi, 1e-6)["variance_ok"]
    assert not checks.latent_corridor(z, sigma, phi * 0.8, 1e-6)["lag1_ok"]
    iid = sigma[:, None] * rng.standard_normal((300, 500))
    stats = checks.latent_corridor(iid, sigma, np.zeros(300), 1e-6)
    assert stats["variance_ok"] and stats["lag1_ok"]


def _moments(mu: np.ndarray, n: np.ndarray, kappa: np.ndarray | None) -> checks.CountMoments:
    m = checks.CountMoments()
    for part in range(0, len(mu), 100_000):  # streamed, as the check sees chunks
        sl = slice(part, part + 100_000)
        m.add(mu[sl], n[sl].astype(float), None if kappa is None else kappa[sl])
    return m


@pytest.mark.parametrize("law", ["poisson", "nb2"])
def test_count_moments_of_grid_rows_are_those_of_their_drawing_rows(law):
    """Rows of the grid (κ one per entity, the rows starting inside one, μ ≤ eps and NaN μ left out) give the sums
    of the drawing rows listed one by one with their own κ."""
    rng = np.random.default_rng(21)  # fixed key
    h, first, rows, eps = 9, 4, 60, 1e-6
    mu = np.where(rng.random(rows) < 0.25, 0.0, rng.uniform(0.05, 40.0, rows))
    mu[7] = np.nan
    n = rng.poisson(np.nan_to_num(mu)).astype(np.int64)
    capped = rng.random(rows) < 0.05
    kappa = rng.uniform(0.5, 8.0, -(-(first + rows) // h)) if law == "nb2" else None
    grid = checks.CountMoments()
    grid.add(mu, n, kappa, capped, 30.0, eps=eps, first_bucket=first, buckets=h)
    use = mu > eps
    listed = checks.CountMoments()
    listed.add(mu[use], n[use].astype(float), None if kappa is None else np.repeat(kappa, h)[first:first + rows][use],
               capped[use], 30.0)
    assert vars(grid) == vars(listed)
    assert grid.rows + grid.cap_rows == int(use.sum())


def test_count_moments_are_the_stated_sums_by_hand():
    # Poisson μ = 1 (sd 1: central interval [0, 2]) and μ = 4 (sd 2: [2, 6]); NB2 μ = 4, κ = 2 (V = 12, sd 3.46:
    # [1, 7]); the outside probabilities from the pmf worked out here, not by the kernel's recurrence.
    e, f = math.exp, math.factorial
    m = checks.CountMoments()
    m.add(np.array([1.0, 4.0]), np.array([0.0, 7.0]), None)
    assert (m.rows, m.mu, m.n, m.sq, m.var) == (2, 5.0, 7.0, 10.0, 5.0)
    p1 = 1 - e(-1) * 2.5
    p4 = 1 - sum(e(-4) * 4**k / f(k) for k in range(2, 7))
    assert m.outside == 1.0  # N = 7 lies outside [2, 6]
    assert m.outside_p == pytest.approx(p1 + p4, rel=1e-13)
    assert m.outside_var == pytest.approx(p1 * (1 - p1) + p4 * (1 - p4), rel=1e-13)
    # Below μ = 1 the interval starts at 0 and ends at 0 (μ + √μ < 1) or at 1: μ = 0.25 gives [0, 0], μ = 0.5 [0, 1]
    small = checks.CountMoments()
    small.add(np.array([0.25, 0.5, 0.5]), np.array([1.0, 1.0, 2.0]), None)
    q1, q2 = 1 - e(-0.25), 1 - e(-0.5) * 1.5
    assert small.outside == 2.0  # N = 1 outside [0, 0], N = 1 inside [0, 1], N = 2 outside it
    assert small.outside_p == pytest.approx(q1 + 2 * q2, rel=1e-13)
    assert small.outside_var == pytest.approx(q1 * (1 - q1) + 2 * q2 * (1 - q2), rel=1e-13)
    nb2 = checks.CountMoments()
    nb2.add(np.array([4.0]), np.array([3.0]), np.array([2.0]))
    assert (nb2.var, nb2.mu2_kappa, nb2.ratio_max) == (12.0, 8.0, 2.0)
    pmf = [math.gamma(k + 2) / (math.gamma(2) * f(k)) * (2 / 6) ** 2 * (4 / 6) ** k for k in range(8)]
    assert nb2.outside == 0.0 and nb2.outside_p == pytest.approx(1 - sum(pmf[1:8]), rel=1e-13)
    with pytest.raises(ValueError):
        nb2.add(np.ones(2), np.ones(3), None)


def test_count_corridor_accepts_poisson_and_flags_overdispersion():
    rng = np.random.default_rng(7)
    mu = rng.lognormal(0.0, 1.5, 400_000)
    poisson = rng.poisson(mu)
    assert checks.count_corridor(_moments(mu, poisson, None), "poisson", 1e-6)["passed"]
    kappa = np.full(len(mu), 5.0)
    mixed = rng.poisson(rng.gamma(kappa, mu / kappa))
    assert not checks.count_corridor(_moments(mu, mixed, None), "poisson", 1e-6)["dispersion_ok"]
    stats = checks.count_corridor(_moments(mu, mixed, kappa), "nb2", 1e-6)
    assert stats["passed"] and 0.9 < stats["variance_ratio"] < 1.1


def test_count_corridors_are_non_asymptotic_and_catch_mean_and_shape_errors():
    # Fixed key: each accepting corridor has false alarm ≤ 1e-6. Each rejected effect exceeds its bound by more
    # than 9 standard deviations of its statistic (a 5% mean shift: expected excess 41k counts, bound 16k, sd
    # 2.7k; κ off by 4×, or binomial counts: shifts of the outside count of several bounds), so each misses with
    # probability < 1e-6.
    rng = np.random.default_rng(20260324)
    mu = rng.lognormal(0.5, 1.0, 300_000)
    kappa = rng.choice([0.5, 2.0, 10.0], len(mu))
    nb2 = rng.poisson(rng.gamma(kappa, mu / kappa))
    ok = checks.count_corridor(_moments(mu, nb2, kappa), "nb2", 1e-6)
    assert ok["passed"] and ok["total_low"] < ok["sum_mu"] < ok["total_high"]
    assert not checks.count_corridor(_moments(mu, rng.poisson(rng.gamma(kappa, 1.05 * mu / kappa)), kappa),
                                     "nb2", 1e-6)["total_ok"]
    assert not checks.count_corridor(_moments(mu, nb2, 4 * kappa), "nb2", 1e-6)["dispersion_ok"]
    assert not checks.count_corridor(_moments(mu, nb2, kappa / 4), "nb2", 1e-6)["dispersion_ok"]
    under = rng.binomial(np.ceil(2 * mu).astype(int), mu / np.ceil(2 * mu))  # mean μ, variance ≤ μ/2
    stats = checks.count_corridor(_moments(mu, under, None), "poisson", 1e-6)
    assert stats["total_ok"] and not stats["dispersion_ok"]
    assert stats["outside"] - stats["outside_expected"] < -stats["outside_bound"]


def test_count_corridor_bounds_are_the_stated_inequalities():
    m = checks.CountMoments()
    m.add(np.array([0.5, 3.0, 40.0]), np.array([0.0, 2.0, 45.0]), None)
    stats = checks.count_corridor(m, "poisson", 1e-6)
    c = np.log(6e6)
    assert stats["total_high"] - m.mu == pytest.approx(c / 3 + np.sqrt((c / 3) ** 2 + 2 * m.mu * c))
    assert m.mu - stats["total_low"] == pytest.approx(np.sqrt(2 * m.mu * c))
    assert stats["outside_bound"] == pytest.approx(c / 3 + np.sqrt((c / 3) ** 2 + 2 * m.outside_var * c))


def test_capped_rows_enter_by_their_exact_tail_and_200_rows_at_the_cap_do_not_alarm():
    """200 rows at μ = 1e6 with the shipped cap 1e6: about half are capped; P(N > cap) per row is exact, so the
    cap statistic is centred (false alarm ≤ 1e-6 on this fixed key) and the free rows are unaffected."""
    rng = np.random.default_rng(20260404)
    mu = np.concatenate([np.full(200, 1e6), rng.lognormal(0.0, 1.0, 10_000)])
    n = rng.poisson(mu)
    cap = 1e6
    m = checks.CountMoments()
    m.add(mu, np.minimum(n, cap).astype(float), None, n > cap, cap)
    stats = checks.count_corridor(m, "poisson", 1e-6)
    assert stats["passed"] and m.cap_rows == 200 and m.rows == 10_000
    assert m.cap_p == pytest.approx(200 * 0.49973, rel=1e-3)  # P(Poisson(1e6) > 1e6) = 0.49973…
    assert 50 < m.capped < 150
    every = checks.CountMoments()
    every.add(mu[:200], np.full(200, cap), None, np.ones(200, dtype=bool), cap)  # all capped: 100 too many
    assert not checks.count_corridor(every, "poisson", 1e-6)["cap_ok"]


def test_free_rows_add_their_chernoff_bound_and_far_ones_exactly_nothing():
    """cap_free_bound sums e^{k − μ − k ln(k/μ)} (k = cap + 1) over the free rows, worked out here: μ = 9.8e5 adds
    about e^−203; μ = 1e5 and μ = 3 lie so far below the cap that their terms are 0.0 in binary64."""
    cap, k = 1e6, 1e6 + 1.0
    near = k - 9.8e5 - k * math.log(k / 9.8e5)
    assert -746 < near < math.log(1e-40)  # free, with a term binary64 still holds
    m = checks.CountMoments()
    m.add(np.array([9.8e5, 1e5, 3.0]), np.array([980_123.0, 100_001.0, 2.0]), None, None, cap)
    assert (m.rows, m.cap_rows) == (3, 0)
    assert m.cap_free_bound == pytest.approx(math.exp(near), rel=1e-9) and m.cap_free_bound > 0
    far = checks.CountMoments()
    far.add(np.array([1e5, 3.0]), np.array([100_001.0, 2.0]), None, None, cap)
    assert far.cap_free_bound == 0.0 and far.rows == 2


@pytest.mark.parametrize("events, draws", [(0, 1), (1, 2), (65_536, 1), (200_001, 2)])
def test_streamed_trace_is_full_batches_with_running_totals(events, draws):
    from arrival_core.rng import ledger

    sizes = [65_536] * (events // 65_536) + ([events % 65_536] if events % 65_536 else [])
    trace = ledger.trace_frame(events, draws, 1, append_events=65_536)
    assert trace["events"].to_list() == sizes
    assert trace["draws_total"].to_list() == [draws * v for v in np.cumsum(sizes).tolist()]
    assert ledger.trace_problems(trace, append_events=65_536) == []
    assert ledger.trace_totals(trace) == ledger.FamilyTotals(events, events * draws, events)


def _events_by_hand(bases: list[tuple[int, int, int]], logged: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Events logging (entity, bucket) rows, envelopes worked out with Python's integers (128-bit counters)."""
    cols: dict[str, list] = {name: [] for name in ("rng_key", "rng_counter_before_hi", "rng_counter_before_lo",
                                                   "rng_counter_after_hi", "rng_counter_after_lo")}
    for entity, bucket in logged:
        key, hi, lo = bases[entity]
        before = (hi << 64) + lo + bucket
        after = before + 1
        for name, value in (("rng_key", key), ("rng_counter_before_hi", before >> 64),
                            ("rng_counter_before_lo", before & (2**64 - 1)), ("rng_counter_after_hi", after >> 64),
                            ("rng_counter_after_lo", after & (2**64 - 1))):
            cols[name].append(value)
    return {name: np.array(values, dtype=np.uint64) for name, values in cols.items()}


def test_event_mismatches_counts_each_column_and_its_first_event():
    from arrival_core.checks import event_kernels

    top = 2**64 - 1
    bases = [(11, 0, top), (12, 5, 7), (13, top - 1, top - 3)]  # carries into hi at bucket ≥ 1 and ≥ 3
    logged = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 9), (2, 3), (2, 4)]
    h = 10
    entity = np.array([e for e, _ in logged])
    bucket = np.array([b for _, b in logged])
    merchant = np.array([100, 200, 300], dtype=np.uint64)
    codes = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]], dtype=np.int32)  # per string key, per entity
    bases_ = tuple(np.array(v, dtype=np.uint64) for v in zip(*bases))
    mapping = np.array([8, 7, 6, 5, 4, 3, 2, 1, 0], dtype=np.int32)  # the events' dictionary into the domain's

    def run(first_row=0, **edits):
        events = {"bucket_index": bucket.astype(np.int32), "merchant_id": merchant[entity],
                  "codes": (8 - codes[:, entity]).astype(np.int32), **_events_by_hand(bases, logged),
                  "draws": np.full(len(logged), 2, dtype=np.int64), "blocks": np.ones(len(logged), dtype=np.int64)}
        for name, (row, value) in edits.items():
            events[name][row] = value  # codes: (string key, [event, index])
        found, first = event_kernels.event_mismatches(
            first_row + entity * h + bucket, first_row, h, merchant, tuple(codes), bases_, events["bucket_index"],
            events["merchant_id"], tuple((c, mapping) for c in events["codes"]),
            tuple(events[n] for n in event_kernels.ENVELOPE_COLUMNS), draws=2)
        return dict(zip(event_kernels.KEY_COLUMNS + event_kernels.ENVELOPE_COLUMNS, zip(found, first)))

    assert all(v == (0, -1) for v in run().values())
    assert run(rng_counter_before_hi=(1, 0))["rng_counter_before_hi"] == (1, 1)  # the carry is expected
    assert run(rng_counter_after_lo=(4, 0))["rng_counter_after_lo"] == (1, 4)
    assert run(bucket_index=(6, 5))["bucket_index"] == (1, 6)
    assert run(merchant_id=(2, 1))["merchant_id"] == (1, 2)
    assert run(draws=(3, 1))["draws"] == (1, 3) and run(blocks=(5, 2))["blocks"] == (1, 5)
    changed = run(rng_key=(2, 12))
    assert changed["rng_key"] == (1, 2) and sum(n for n, _ in changed.values()) == 1
    assert all(v == (0, -1) for v in run(first_row=70).values())  # rows counted from the first entity's row 0
    assert run(codes=((1, 3), 0))["tzid"] == (1, 3)  # an index the mapping sends to another entity's code
    assert run(codes=((0, 0), 9))["legal_country_iso"] == (1, 0)  # outside the mapping: a key the domain lacks


@pytest.mark.parametrize("cap", [None, 3.0])
def test_realised_mismatches_are_the_array_rules(cap):
    from arrival_core.checks import intensity_kernels

    rng = np.random.default_rng(5)
    h, groups = 6, np.array([1, 0, 1, 2], dtype=np.int32)  # 4 entities × 6 buckets
    field = rng.uniform(0.5, 1.5, (3, h))
    factor = field[groups].ravel()
    target = rng.uniform(0.5, 4.0, factor.size)
    realised = target * factor if cap is None else np.minimum(target * factor, cap)
    sealed = target.copy()
    sealed[7], target[20] = 9.0, np.nan  # λ_baseline off the surface twice (NaN equals nothing)
    factor[3], factor[11] = 0.1, np.nan  # ξ out of bounds once, NaN once (it then differs from everything)
    realised[15] = 2 * realised[15]
    expected = [
        sealed != target, (factor < 0.4) | (factor > 1.6),
        realised != (target * factor if cap is None else np.minimum(target * factor, cap)),
        factor.reshape(-1, h) != field[groups],
    ]
    found, first = intensity_kernels.realised_mismatches(target, sealed, factor, realised, 0.4, 1.6, cap, field,
                                                         groups, h)
    assert found.tolist() == [int(bad.sum()) for bad in expected]
    assert first.tolist() == [int(np.argmax(bad.ravel())) for bad in expected]
    found, _ = intensity_kernels.realised_mismatches(target, sealed, factor, realised, 0.4, 1.6, cap, None, groups, h)
    assert found[3] == 0  # no published field: its rule is not checked


@pytest.mark.parametrize("applied_known", [False, True])
def test_latent_mismatches_are_the_array_rules(applied_known):
    from arrival_core.checks import latent_kernels
    from arrival_core.rng import variates

    rng = np.random.default_rng(12)  # fixed key
    groups, h, start, n = 5, 8, 11, 24  # rows 11..34 of a 5 × 8 field: from inside group 1 to inside group 4
    sigma, length_of = rng.uniform(0.2, 0.9, groups), rng.uniform(2.0, 9.0, groups)
    at = start + np.arange(n)
    group, bucket = at // h, (at % h).astype(np.int32)
    z = rng.normal(0.0, 1.0, n) * sigma[group]
    raw = variates.exp(z - 0.5 * (sigma[group] * sigma[group]))  # the C library's exp, as the engine takes it
    factor = np.clip(raw, 0.6, 1.6)
    std, length, clipped, applied = sigma[group].copy(), length_of[group].copy(), factor != raw, factor.copy()
    std[3], length[5], factor[7], clipped[9], applied[12] = 0.5, 1.0, factor[7] * 1.01, ~clipped[9], 2.0
    factor[14] = np.nan  # NaN equals nothing: off the clip, and marked clipped wrongly unless `clipped` says so
    mapping = np.array([4, 3, 2, 1, 0], dtype=np.int32)  # the rows' dictionary is the group ids reversed
    index = (4 - group).astype(np.int32)
    index[20], bucket[21] = 0, 7  # a row of another group, a row in another bucket
    expected = [(mapping[index] != group) | (bucket != at % h), std != sigma[group], length != length_of[group],
                factor != np.clip(raw, 0.6, 1.6), clipped != (factor != raw),
                factor != applied if applied_known else np.zeros(n, dtype=bool)]
    slot = np.array([-1, 0, -1, 1, -1])
    latent_out, factor_out = np.zeros((groups, h)), np.zeros((2, h))
    found, first, not_one = latent_kernels.latent_mismatches(
        start % h, h, start // h, (index, mapping), bucket, std, length, z, factor, clipped,
        applied if applied_known else None, sigma, length_of, 0.6, 1.6, slot, latent_out, factor_out)
    assert found.tolist() == [int(bad.sum()) for bad in expected]
    assert first.tolist() == [int(np.argmax(bad)) if bad.any() else -1 for bad in expected]
    assert not_one == int((factor != 1).sum())
    assert latent_out.ravel()[start:start + n].tolist() == z.tolist()
    kept = np.flatnonzero(slot[group] >= 0)
    np.testing.assert_array_equal(factor_out[slot[group[kept]], at[kept] % h], factor[kept])


@pytest.mark.parametrize("drawn_known", [False, True])
def test_count_mismatches_are_the_array_rules(drawn_known):
    from arrival_core.checks import count_row_kernels

    rng = np.random.default_rng(8)  # fixed key
    eps, cap = 1e-9, 6
    mu = np.where(rng.random(400) < 0.3, 0.0, rng.uniform(0.1, 5.0, 400))
    count = np.where(mu > eps, np.minimum(rng.poisson(mu), cap), 0).astype(np.int64)
    capped = count == cap
    realised, sealed, drawn = mu.copy(), mu.copy(), count.copy()
    sealed[17], realised[40], mu[41] = 1.5, np.nan, np.nan  # off S2's, NaN (equal to nothing) twice
    count[60], count[np.flatnonzero(mu == 0)[3]] = cap + 2, 1  # over the cap; drawn where μ ≤ eps
    capped[np.flatnonzero(count < cap)[5]] = True  # a flag without the cap
    drawn[99] += 1  # a published count other than the one drawn
    expected = [realised != sealed, mu != realised, count > cap, (mu <= eps) & (count != 0),
                capped & (count != cap), count != drawn]
    found, first, drawing = count_row_kernels.count_mismatches(realised, sealed, mu, count, capped,
                                                               drawn if drawn_known else None, cap, eps)
    if not drawn_known:
        expected[-1] = np.zeros(len(mu), dtype=bool)
    assert found.tolist() == [int(bad.sum()) for bad in expected]
    assert first.tolist() == [int(np.argmax(bad)) if bad.any() else -1 for bad in expected]
    assert all(found) == drawn_known and drawing == int((mu > eps).sum())
