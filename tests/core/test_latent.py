"""S2 latent law: policy parsing, per-group σ/L/φ, the OU and iid recursions, factors, counters and alignment."""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import yaml

from arrival_core import contracts, entity_grid, latent
from arrival_core.errors import ArrivalError
from arrival_core.rng import philox, streams, variates

MF, PH = "a" * 64, "b" * 64


def _doc() -> dict:
    return yaml.safe_load((contracts.DEFAULT_CONFIG_DIR / "arrival_lgcp_config_5B.yaml").read_text())


def _policy(**changes) -> latent.LgcpPolicy:
    doc = _doc()
    for path, value in changes.items():
        node = doc
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return latent.parse_lgcp_policy(doc)


def _grouping(rows: list[tuple]) -> pl.DataFrame:
    cols = ("merchant_id", "legal_country_iso", "tzid", "channel_group", "scenario_band", "demand_class",
            "virtual_band", "group_id")
    return pl.DataFrame([dict(zip(cols, r)) for r in rows], schema_overrides={"merchant_id": pl.UInt64})


def test_shipped_lgcp_config_parses_to_its_values():
    p = _policy()
    assert (p.latent_model_id, p.kernel_id, p.version) == ("log_gaussian_ou_v1", "ou_ar1_buckets_v1", "v1.0.0")
    assert (p.sigma.base["stress"], p.sigma.bounds, p.length.bounds) == (0.30, (0.02, 0.9), (1.0, 168.0))
    assert (p.min_factor, p.max_factor, p.lambda_max, p.emit_latent_field) == (0.2, 5.0, None, True)


@pytest.mark.parametrize("field, value", [("sigma__bounds", [0.9, 0.02]), ("length_scale_buckets__bounds", [10, 2]),
                                          ("clipping__min_factor", 6.0)])
def test_bounds_out_of_order_are_lgcp_config_invalid(field, value):
    with pytest.raises(ArrivalError) as err:
        _policy(**{field: value})
    assert err.value.code == "5B.S2.LGCP_CONFIG_INVALID"


def test_group_parameters_multiply_strata_and_clamp():
    grouping = _grouping([
        (1, "US", "America/New_York", "card_not_present", "stress", "nightlife", "virtual", "g_a"),
        (2, "US", "America/New_York", "card_present", "baseline", "office_hours", "physical", "g_b"),
        (3, "US", "America/New_York", "card_present", "baseline", "office_hours", "physical", "g_b"),
    ])
    params = latent.group_parameters(grouping, _policy(sigma__bounds=[0.02, 0.4]))
    a, b = params.row(0, named=True), params.row(1, named=True)
    assert a["group_id"] == "g_a" and b["members"] == 2
    assert a["sigma"] == 0.4  # 0.30 · 1.30 · 1.10 · 1.15 = 0.493 clamped to the upper bound
    assert b["sigma"] == pytest.approx(0.18 * 0.85)
    assert a["length_scale_buckets"] == pytest.approx(6 * 0.70) and b["length_scale_buckets"] == pytest.approx(12 * 1.25)
    assert a["phi"] == pytest.approx(math.exp(-1 / 4.2))


def test_a_group_mixing_strata_is_domain_align_failed():
    grouping = _grouping([
        (1, "US", "America/New_York", "card_present", "baseline", "office_hours", "physical", "g"),
        (2, "US", "America/New_York", "card_present", "baseline", "nightlife", "physical", "g"),
    ])
    with pytest.raises(ArrivalError) as err:
        latent.group_parameters(grouping, _policy())
    assert err.value.code == "5B.S2.DOMAIN_ALIGN_FAILED" and "'g'" in err.value.message


def test_ou_recursion_follows_its_definition():
    z = np.random.default_rng(7).standard_normal((3, 50))
    sigma, phi = np.array([0.1, 0.3, 0.9]), np.array([0.5, 0.9, 0.0])
    got = latent.latent_gaussian("log_gaussian_ou_v1", sigma, phi, z)
    for g in range(3):
        expected = [sigma[g] * z[g, 0]]
        for t in range(1, 50):
            expected.append(phi[g] * expected[-1] + sigma[g] * math.sqrt(1 - phi[g] ** 2) * z[g, t])
        np.testing.assert_allclose(got[g], expected, rtol=1e-13, atol=1e-15)


def test_iid_model_is_sigma_times_normals():
    z = np.random.default_rng(8).standard_normal((2, 10))
    sigma = np.array([0.2, 0.5])
    np.testing.assert_array_equal(latent.latent_gaussian("log_gaussian_iid_v1", sigma, np.zeros(2), z),
                                  sigma[:, None] * z)


def test_factors_are_exp_of_z_minus_half_sigma_squared_clipped():
    policy = _policy()
    z = np.array([[0.0, 10.0, -10.0, 0.3]])
    sigma = np.array([0.5])
    xi = latent.latent_factors(z, sigma, policy)
    assert xi[0, 0] == pytest.approx(math.exp(-0.125), rel=1e-15)
    assert xi[0, 3] == pytest.approx(math.exp(0.3 - 0.125), rel=1e-15)
    assert (xi[0, 1], xi[0, 2]) == (5.0, 0.2)


def test_normals_come_from_block_j_of_the_group_stream():
    key, hi, lo = streams.stream_bases(latent.FAMILY_ID, MF, PH, 42, "baseline_v1", ["group_id=g1", "group_id=g2"])
    z = latent.latent_normals(key, hi, lo, 5)
    for g in range(2):
        for j in range(5):
            c_hi, c_lo, _ = philox.add_counter(hi[g], lo[g], j)
            x0, x1 = philox.philox2x64_10(c_lo, c_hi, key[g])
            u0, u1 = ((int(x0) >> 11) | 1) * 2.0**-53, ((int(x1) >> 11) | 1) * 2.0**-53
            assert z[g, j] == pytest.approx(math.sqrt(-2 * math.log(u0)) * math.cos(2 * math.pi * u1), rel=1e-14)


def test_sample_latent_logs_one_event_per_group_spanning_h_blocks():
    params = latent.group_parameters(_grouping([
        (1, "US", "America/New_York", "card_present", "baseline", "office_hours", "physical", "g1"),
        (2, "US", "America/New_York", "card_present", "baseline", "retail_daytime", "physical", "g2"),
    ]), _policy())
    field = latent.sample_latent(params, _policy(), 24, manifest_fingerprint=MF, parameter_hash=PH, seed=42,
                                 scenario_id="baseline_v1")
    key, hi, lo = streams.stream_bases(latent.FAMILY_ID, MF, PH, 42, "baseline_v1", ["group_id=g1", "group_id=g2"])
    assert field.events == 2 and field.latent.shape == (2, 24)
    np.testing.assert_array_equal(field.rng_key, key)
    np.testing.assert_array_equal(field.counter_before[1], lo)
    after_hi, after_lo, _ = philox.add_counter(hi, lo, 24)
    np.testing.assert_array_equal(field.counter_after[0], after_hi)
    np.testing.assert_array_equal(field.counter_after[1], after_lo)
    normals = variates.box_muller(*streams.blocks(np.repeat(key, 24), np.repeat(hi, 24), np.repeat(lo, 24),
                                                  np.tile(np.arange(24, dtype=np.uint64), 2)))
    np.testing.assert_array_equal(field.latent, latent.latent_gaussian(
        "log_gaussian_ou_v1", params["sigma"].to_numpy(), params["phi"].to_numpy(), normals.reshape(2, 24)))


def test_model_none_has_unit_factors_and_no_events():
    params = latent.group_parameters(_grouping([
        (1, "US", "America/New_York", "card_present", "baseline", "office_hours", "physical", "g1")]), _policy())
    field = latent.sample_latent(params, _policy(latent_model_id="none"), 12, manifest_fingerprint=MF,
                                 parameter_hash=PH, seed=1, scenario_id="s")
    assert field.events == 0 and (field.factor == 1).all() and (field.latent == 0).all() and (field.sigma == 0).all()


def test_a_latent_stream_that_wraps_the_counter_is_rng_accounting_mismatch():
    top = np.uint64(2**64 - 1)
    with pytest.raises(ArrivalError) as err:
        latent._counter_after(np.array([top]), np.array([top - np.uint64(3)]), 10, ("g",))
    assert err.value.code == "5B.S2.RNG_ACCOUNTING_MISMATCH"


def test_realise_multiplies_by_the_group_factor_and_caps_at_lambda_max():
    field = latent.LatentField(("g0", "g1"), np.zeros(2), np.ones(2), np.zeros((2, 2)),
                               np.array([[1.0, 2.0], [0.5, 4.0]]), np.zeros((2, 2), bool), *([np.zeros(0)] * 1),
                               (np.zeros(0), np.zeros(0)), (np.zeros(0), np.zeros(0)))
    factor, realised = latent.realise(np.array([1.0, 3.0, 10.0, 10.0]), np.array([1, 0]), field, 25.0)
    np.testing.assert_array_equal(factor, [0.5, 4.0, 1.0, 2.0])
    np.testing.assert_array_equal(realised, [0.5, 12.0, 10.0, 20.0])
    _, capped = latent.realise(np.array([10.0, 10.0]), np.array([1]), field, 30.0)
    assert capped.tolist() == [5.0, 30.0]


def _domain(buckets: int = 3) -> entity_grid.Domain:
    grouping = _grouping([
        (1, "DE", "Europe/Berlin", "card_present", "baseline", "office_hours", "physical", "g1"),
        (2, "US", "America/New_York", "card_not_present", "baseline", "online_24h", "virtual", "g2"),
    ])
    return entity_grid.build_domain(grouping, buckets, ("g1", "g2"))


def _surface(domain: entity_grid.Domain) -> pl.DataFrame:
    return domain.entities.select(pl.all().repeat_by(domain.buckets).explode()).with_columns(
        pl.Series("b", np.tile(np.arange(domain.buckets, dtype=np.int32), domain.size)))


def test_a_chunk_of_whole_entities_aligns_and_a_broken_row_is_found():
    d = _domain()
    chunk = _surface(d)
    assert entity_grid.chunk_misaligned(chunk.to_arrow(), d, 0, 2, "b") == (None, None)
    recoded = chunk.with_columns(pl.col("tzid").cast(pl.Categorical)).to_arrow()  # dictionary-encoded strings
    assert entity_grid.chunk_misaligned(recoded, d, 0, 2, "b") == (None, None)
    moved = chunk.with_columns(pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("XX")).otherwise("legal_country_iso")
                               .alias("legal_country_iso"))
    assert entity_grid.chunk_misaligned(moved.to_arrow(), d, 0, 2, "b") == (4, None)
    regrouped = chunk.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(pl.lit("g1")).otherwise("group_id")
                                   .alias("group_id"))
    assert entity_grid.chunk_misaligned(regrouped.to_arrow(), d, 0, 2, "b", group_column="group_id") == (None, 5)


def _summary(frame: pl.DataFrame) -> pl.DataFrame:
    b = pl.col("b")
    return frame.group_by(["merchant_id", "legal_country_iso", "tzid", "channel_group"]).agg(
        pl.len().alias("rows"), b.n_unique().alias("distinct"), b.min().alias("min_bucket"),
        b.max().alias("max_bucket"), b.cast(pl.Int64).sum().alias("sum_bucket"))


def test_alignment_error_names_the_missing_bucket():
    d = _domain(4)
    surface = _surface(d).filter(~((pl.col("merchant_id") == 2) & (pl.col("b") == 2)))
    err = entity_grid.alignment_error(_summary(surface), d, state="S2", where="f", surface="λ")
    assert err.code == "5B.S2.BUCKET_SET_INCONSISTENT" and err.context["key"]["bucket_index"] == 2


def test_alignment_error_names_an_entity_with_no_group_and_a_group_with_no_rows():
    d = _domain()
    extra = _surface(d).with_columns(pl.lit("FR").alias("legal_country_iso"))
    err = entity_grid.alignment_error(_summary(pl.concat([_surface(d), extra])), d, state="S3", where="f", surface="λ")
    assert err.code == "5B.S3.DOMAIN_ALIGN_FAILED" and err.context["key"]["legal_country_iso"] == "FR"
    err = entity_grid.alignment_error(_summary(_surface(d).filter(pl.col("merchant_id") == 1)), d, state="S2",
                                 where="f", surface="λ")
    assert err.code == "5B.S2.DOMAIN_ALIGN_FAILED" and err.context["key"]["merchant_id"] == 2
