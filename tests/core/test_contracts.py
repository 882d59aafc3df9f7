"""Schema packs, document validation and full table validation (one bad row among a million is found)."""
from __future__ import annotations

import shutil
import zoneinfo
from datetime import UTC, datetime

import jsonschema
import numpy as np
import polars as pl
import pytest
import yaml

from arrival_core import contracts, pipeline, table_schema, tables
from arrival_core.errors import ArrivalError

COUNTS = "schemas.5B.yaml#/model/s3_bucket_counts_5B"
KEY = ("scenario_id", "merchant_id", "legal_country_iso", "tzid", "channel_group", "bucket_index")
MF, PH = "a" * 64, "b" * 64
N_ENTITIES, N_BUCKETS = 500, 2000  # 1,000,000 rows
BAD_ROW = 612_345


def _walk(node, path=""):
    """Yield (json pointer, node) for every mapping in a parsed pack."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}")


def _table_refs() -> list[str]:
    return [
        f"{pack}#{pointer}"
        for pack, doc in contracts.schema_packs().items()
        for pointer, node in _walk(doc)
        if node.get("x-table") is True
    ]


# ---- schema packs ----------------------------------------------------------------------------------------------


def test_the_five_packs_exist():
    assert set(contracts.schema_packs()) == {
        "schemas.layer1.yaml", "schemas.5A.yaml", "schemas.3B.yaml", "schemas.5B.yaml", "schemas.world.yaml",
    }


@pytest.mark.parametrize("pack", sorted(contracts.schema_packs()))
def test_pack_is_valid_against_the_2020_12_metaschema(pack):
    doc = contracts.schema_packs()[pack]
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(doc)


@pytest.mark.parametrize("pack", sorted(contracts.schema_packs()))
def test_every_ref_in_pack_resolves(pack):
    resolver = contracts.schema_registry().resolver(base_uri=pack)
    refs = [node["$ref"] for _, node in _walk(contracts.schema_packs()[pack]) if isinstance(node.get("$ref"), str)]
    assert refs, f"{pack} has no $ref at all"  # the walk itself works
    for ref in refs:
        assert resolver.lookup(ref).contents is not None, ref


def test_every_dictionary_schema_ref_resolves():
    entries = contracts.load_dictionary().values()
    refs = [e.schema_ref for e in entries] + [e.raw["flag_schema_ref"] for e in entries if "flag_schema_ref" in e.raw]
    assert len(refs) > len(entries)  # the seven bundles add their flag schemas
    for ref in refs:
        assert isinstance(contracts.load_schema(ref), dict), ref


def test_parquet_datasets_point_at_table_schemas_holding_their_keys():
    for entry in contracts.load_dictionary().values():
        if entry.format != "parquet":
            continue
        columns = table_schema.polars_schema(entry.schema_ref)
        missing = set(entry.primary_key) - set(columns) | set(entry.writer_sort) - set(columns)
        assert not missing, f"{entry.id}: key columns {missing} are not in {entry.schema_ref}"


@pytest.mark.parametrize("ref", _table_refs())
def test_table_schema_is_closed_and_every_column_is_required_and_typed(ref):
    schema = contracts.load_schema(ref)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])
    assert all("x-dtype" in col for col in schema["properties"].values())
    assert list(table_schema.polars_schema(ref)) == list(schema["properties"])  # compiles, in schema order


def test_polars_schema_gives_exact_dtypes_in_schema_order():
    schema = table_schema.polars_schema("schemas.5B.yaml#/model/s1_time_grid_5B")
    assert list(schema)[:4] == ["manifest_fingerprint", "parameter_hash", "scenario_id", "bucket_index"]
    assert schema["bucket_start_utc"] == pl.Datetime("us", "UTC")
    assert schema["local_day_of_week"] == pl.Int8
    assert schema["local_minutes_since_midnight"] == pl.Int16
    assert table_schema.polars_schema("schemas.5A.yaml#/model/scenario_manifest_5A")["labels"] == pl.List(pl.String)
    assert table_schema.polars_schema(COUNTS)["merchant_id"] == pl.UInt64


def test_unknown_schema_ref_is_a_contract_error():
    with pytest.raises(ArrivalError) as err:
        contracts.load_schema("schemas.5B.yaml#/model/no_such_dataset")
    assert err.value.code == "5B.CONTRACT_INVALID"
    assert "no_such_dataset" in err.value.message


def test_non_table_schema_cannot_be_used_as_a_table():
    with pytest.raises(ArrivalError) as err:
        table_schema.polars_schema("schemas.5B.yaml#/model/s0_gate_receipt_5B")
    assert err.value.code == "5B.CONTRACT_INVALID"


# ---- documents -------------------------------------------------------------------------------------------------


def _receipt(**extra):
    return {"run_id": "r1", "parameter_hash": PH, "manifest_fingerprint": MF, "spec_version": "1.0", **extra}


def _check(doc, ref):
    contracts.validate_document(doc, ref, code="5B.S0.RUN_RECEIPT_INVALID", where="run_receipt.json")


def test_run_receipt_of_a_synthetic_world_validates():
    _check(_receipt(synthetic=True, profile="tiny", world_seed=2**64 - 1), "schemas.layer1.yaml#/$defs/run_receipt")


def test_synthetic_run_receipt_without_profile_is_rejected():
    with pytest.raises(ArrivalError) as err:
        _check(_receipt(synthetic=True, world_seed=1), "schemas.layer1.yaml#/$defs/run_receipt")
    assert err.value.code == "5B.S0.RUN_RECEIPT_INVALID"
    assert "profile" in err.value.message and err.value.message.startswith("run_receipt.json: $")


def test_run_receipt_with_bad_fingerprint_names_the_field():
    with pytest.raises(ArrivalError) as err:
        _check(_receipt(manifest_fingerprint="A" * 64), "schemas.layer1.yaml#/$defs/run_receipt")
    assert err.value.context["json_path"] == "$.manifest_fingerprint"
    assert err.value.context["file"] == "run_receipt.json"


@pytest.mark.parametrize("text, ok", [
    ("sha256_hex = " + "0" * 64 + "\n", True),
    ("sha256_hex = " + "0" * 64, True),
    ("sha256_hex = " + "0" * 64 + "\n\n", False),
    ("sha256_hex = " + "A" * 64 + "\n", False),
    ("sha256_hex=" + "0" * 64 + "\n", False),
    ("sha256_hex = " + "0" * 63 + "\n", False),
])
def test_text_flag_shape(text, ok):
    errors = list(contracts._validator(contracts.DEFAULT_CONTRACTS_DIR.resolve(),
                                       "schemas.layer1.yaml#/$defs/hashgate_flag_text").iter_errors(text))
    assert (not errors) == ok


def test_json_flag_requires_exactly_the_bundle_digest():
    ref = "schemas.layer1.yaml#/$defs/hashgate_flag_json"
    contracts.validate_document({"bundle_digest_sha256": MF}, ref, code="5B.S0.UPSTREAM_NOT_PASS", where="f")
    with pytest.raises(ArrivalError):
        contracts.validate_document({"bundle_digest_sha256": MF, "x": 1}, ref, code="5B.S0.UPSTREAM_NOT_PASS", where="f")


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../b", "./a", "a//b", ""])
def test_hashgate_index_rejects_member_paths_outside_the_bundle(path):
    index = {"segment": "1A", "manifest_fingerprint": MF, "entries": [{"path": path, "sha256_hex": PH}]}
    with pytest.raises(ArrivalError) as err:
        contracts.validate_document(index, "schemas.layer1.yaml#/$defs/hashgate_index",
                                    code="5B.S0.UPSTREAM_NOT_PASS", where="index.json")
    assert err.value.context["json_path"] == "$.entries[0].path"


def test_hashgate_index_accepts_nested_member_paths():
    index = {"segment": "5A", "manifest_fingerprint": MF,
             "entries": [{"path": "checks/part=1/summary.json", "sha256_hex": PH}]}
    contracts.validate_document(index, "schemas.layer1.yaml#/$defs/hashgate_index",
                                code="5B.S0.UPSTREAM_NOT_PASS", where="index.json")


def test_run_report_fail_needs_an_error_payload():
    report = {
        "state_id": "5B.S2", "parameter_hash": PH, "manifest_fingerprint": MF, "seed": 42,
        "scenario_id": "baseline_v1", "run_id": "abc123", "scenario_set": ["baseline_v1"], "status": "FAIL",
        "error_code": None, "error": None, "started_at_utc": "2026-01-01T00:00:00Z",
        "finished_at_utc": "2026-01-01T00:00:01.5+00:00", "metrics": {},
    }
    ref = "schemas.5B.yaml#/report/run_report_5B"
    with pytest.raises(ArrivalError) as err:
        contracts.validate_document(report, ref, code="5B.S2.IO_WRITE_FAILED", where="run_report_5B.json")
    assert "error" in err.value.message
    unexpected = {"error_code": None, "message": "RuntimeError: disk on fire", "context": {}}
    contracts.validate_document({**report, "error": unexpected}, ref,
                                code="5B.S2.IO_WRITE_FAILED", where="run_report_5B.json")
    error = {"error_code": "5B.S2.DOMAIN_ALIGN_FAILED", "message": "m", "context": {}}
    contracts.validate_document({**report, "error_code": error["error_code"], "error": error}, ref,
                                code="5B.S2.IO_WRITE_FAILED", where="run_report_5B.json")


# ---- tables: one bad row among a million -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def counts() -> pl.DataFrame:
    """A valid, writer-sorted s3_bucket_counts_5B frame of 500 entities x 2000 buckets = 1,000,000 rows."""
    rng = np.random.default_rng(20260101)
    merchants = np.sort(rng.choice(1 << 40, N_ENTITIES // 2, replace=False)).astype(np.uint64) << np.uint64(23)
    entities = pl.DataFrame({
        "merchant_id": np.repeat(merchants, 2),
        "legal_country_iso": np.tile(["DE", "FR"], N_ENTITIES // 2),
        "tzid": np.tile(["Europe/Berlin", "Europe/Paris"], N_ENTITIES // 2),
        "channel_group": np.repeat(rng.choice(["card_not_present", "card_present"], N_ENTITIES // 2), 2),
    }).with_columns(group_id=pl.format("baseline|nightlife|{}|physical|zg07|b{}", "channel_group",
                                       (pl.col("merchant_id") % 90 + 10).cast(pl.String)))
    frame = entities.join(pl.DataFrame({"bucket_index": np.arange(N_BUCKETS, dtype=np.int32)}), how="cross")
    lam = rng.gamma(0.7, 3.0, frame.height)
    frame = frame.with_columns(
        manifest_fingerprint=pl.lit(MF), parameter_hash=pl.lit(PH), seed=pl.lit(42, pl.UInt64),
        scenario_id=pl.lit("baseline_v1"), lambda_realised=pl.Series(lam), mu=pl.Series(lam),
        count_N=pl.Series(rng.poisson(lam), dtype=pl.Int64), count_law_id=pl.lit("poisson"),
        count_capped=pl.lit(False),
    ).select(list(table_schema.polars_schema(COUNTS)))
    assert frame.height == 1_000_000
    return frame


def _set(frame: pl.DataFrame, column: str, value: pl.Expr, row: int = BAD_ROW) -> pl.DataFrame:
    return frame.with_columns(pl.when(pl.int_range(pl.len()) == row).then(value).otherwise(pl.col(column))
                              .alias(column))


def _violations(frame: pl.DataFrame, **kwargs) -> list[tables.TableViolation]:
    return tables.table_violations(frame, COUNTS, primary_key=KEY, writer_sort=KEY, **kwargs)


def _key(frame: pl.DataFrame, row: int = BAD_ROW) -> dict:
    return {name: frame[name][row] for name in KEY}


def _only(found, kind, column) -> tables.TableViolation:
    assert [(v.kind, v.column) for v in found] == [(kind, column)], [v.message for v in found]
    return found[0]


def test_valid_million_row_frame_has_no_violations(counts):
    assert _violations(counts) == []


def test_bad_enum_in_one_row_is_found_with_its_key(counts):
    # count_law_id is not a sort column, so the bad value breaks nothing else
    bad = _set(counts, "count_law_id", pl.lit("binomial"))
    v = _only(_violations(bad), "enum", "count_law_id")
    assert (v.count, v.example_key) == (1, _key(bad))
    assert "'binomial'" in v.message and "count_law_id" in v.message and str(_key(bad)["merchant_id"]) in v.message


def test_null_key_in_one_row_is_found(counts):
    bad = _set(counts, "merchant_id", pl.lit(None, pl.UInt64))
    found = _violations(bad)
    v = next(v for v in found if v.kind == "null")
    assert (v.column, v.count) == ("merchant_id", 1)
    assert v.example_key == {**_key(counts), "merchant_id": None}


def test_negative_lambda_in_one_row_is_found(counts):
    bad = _set(counts, "lambda_realised", pl.lit(-0.5))
    v = _only(_violations(bad), "range", "lambda_realised")
    assert (v.count, v.example_key) == (1, _key(counts))
    assert ">= 0" in v.message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_lambda_in_one_row_is_found(counts, value):
    bad = _set(counts, "mu", pl.lit(value))
    v = _only(_violations(bad), "nonfinite", "mu")
    assert (v.count, v.example_key) == (1, _key(counts))


def test_duplicate_primary_key_in_one_row_is_found(counts):
    # row BAD_ROW + 1 becomes a copy of BAD_ROW's key; the frame stays sorted
    bad = _set(counts, "bucket_index", pl.lit(_key(counts)["bucket_index"], pl.Int32), BAD_ROW + 1)
    v = _only(_violations(bad), "pk_duplicate", ", ".join(KEY))
    assert (v.count, v.example_key) == (1, _key(counts))


def test_duplicate_primary_key_is_found_without_a_writer_order(counts):
    bad = pl.concat([counts, counts.slice(BAD_ROW, 1)])
    found = tables.table_violations(bad, COUNTS, primary_key=KEY)
    v = _only(found, "pk_duplicate", ", ".join(KEY))
    assert (v.count, v.example_key) == (1, _key(counts))


def test_wrong_dtype_is_found(counts):
    bad = counts.with_columns(pl.col("count_N").cast(pl.Int32))
    v = _only(_violations(bad), "dtype", "count_N")
    assert "Int32" in v.message and "Int64" in v.message


def test_unsorted_rows_are_found_with_the_first_out_of_order_key(counts):
    swapped = pl.concat([counts.slice(0, BAD_ROW), counts.slice(BAD_ROW + 1, 1), counts.slice(BAD_ROW, 1),
                         counts.slice(BAD_ROW + 2)])
    v = _only(_violations(swapped), "unsorted", ", ".join(KEY))
    assert (v.count, v.example_key) == (1, _key(counts))  # the original BAD_ROW now sits one row late


def test_unsorted_frame_still_has_its_duplicate_keys_found(counts):
    bad = pl.concat([counts.slice(BAD_ROW, 1), counts])
    kinds = {v.kind for v in _violations(bad)}
    assert kinds == {"unsorted", "pk_duplicate"}


def test_pattern_is_checked_on_distinct_values(counts):
    bad = _set(counts, "tzid", pl.lit("Europe/../Paris"))
    found = _violations(bad)
    v = next(v for v in found if v.kind == "pattern")
    assert (v.column, v.count) == ("tzid", 1)
    assert v.example_key["tzid"] == "Europe/../Paris"


def test_missing_and_extra_columns_are_found(counts):
    found = _violations(counts.drop("mu").with_columns(note=pl.lit("x")))
    assert {(v.kind, v.column) for v in found} == {("missing_column", "mu"), ("extra_column", "note")}


def test_validate_table_raises_naming_file_column_and_key(counts):
    bad = _set(counts, "lambda_realised", pl.lit(-1.0))
    where = "data/layer2/5B/s3_bucket_counts_5B/.../s3_bucket_counts_5B.parquet"
    with pytest.raises(ArrivalError) as err:
        tables.validate_table(bad, COUNTS, code="5B.S3.COUNTS_SCHEMA_INVALID", where=where,
                                 primary_key=KEY, writer_sort=KEY)
    assert err.value.code == "5B.S3.COUNTS_SCHEMA_INVALID"
    assert err.value.message.startswith(where)
    assert "lambda_realised" in err.value.message and str(_key(counts)["merchant_id"]) in err.value.message
    assert err.value.context["column"] == "lambda_realised"
    assert err.value.context["key"] == _key(counts)


def test_validate_table_passes_a_valid_frame(counts):
    tables.validate_table(counts, COUNTS, code="5B.S3.COUNTS_SCHEMA_INVALID", where="f",
                             primary_key=KEY, writer_sort=KEY)


def test_limit_caps_the_number_of_violations(counts):
    bad = counts.with_columns(pl.col("count_N").cast(pl.Int32), pl.col("mu").cast(pl.Float32),
                              pl.col("bucket_index").cast(pl.Int64))
    assert len(_violations(bad, limit=2)) == 2
    assert len(_violations(bad)) == 3


# ---- tables: small frames for list columns, timestamps, nullability and x-allow-nonfinite -------------------------


def test_list_items_are_checked_against_their_enum():
    ref = "schemas.5B.yaml#/$defs/sealed_input_row"
    row = {
        "owner_segment": "5A", "artifact_id": "merchant_zone_scenario_local_5A",
        "manifest_key": "mlr.5A.model.merchant_zone_scenario_local", "role": "intensity_surface",
        "status": "REQUIRED", "read_scope": "ROW_LEVEL", "schema_ref": "schemas.5A.yaml#/model/x",
        "path_template": "data/x", "partition_keys": ["manifest_fingerprint", "scenario_id"],
        "digest_kind": "content", "sha256_hex": PH, "notes": "",
    }
    frame = pl.DataFrame([row, {**row, "artifact_id": "other", "partition_keys": ["scenario_id", "../x"]}],
                         schema=table_schema.polars_schema(ref))
    found = tables.table_violations(frame, ref, primary_key=("owner_segment", "artifact_id"))
    v = _only(found, "enum", "partition_keys")
    assert v.example_key == {"owner_segment": "5A", "artifact_id": "other"}


def test_timestamps_must_be_utc_microseconds():
    ref = "schemas.5A.yaml#/model/scenario_manifest_5A"
    start = datetime(2026, 1, 5, tzinfo=UTC)
    frame = pl.DataFrame({
        "scenario_id": ["baseline_v1"], "scenario_version": ["v1"], "is_baseline": [True], "is_stress": [False],
        "horizon_start_utc": [start], "horizon_end_utc": [start], "labels": [["baseline"]],
    }, schema=table_schema.polars_schema(ref))
    assert tables.table_violations(frame, ref) == []
    naive = frame.with_columns(pl.col("horizon_end_utc").dt.replace_time_zone(None))
    assert [v.kind for v in tables.table_violations(naive, ref)] == ["dtype"]


@pytest.fixture()
def test_pack_dir(tmp_path):
    """A contracts folder holding the real packs plus a test pack with a nullable and a non-finite column."""
    for pack in contracts.schema_packs():
        shutil.copy(contracts.DEFAULT_CONTRACTS_DIR / pack, tmp_path / pack)
    pack = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "model": {"t": {
            "x-table": True, "type": "object", "required": ["k", "v", "w"], "additionalProperties": False,
            "properties": {
                "k": {"$ref": "schemas.layer1.yaml#/$defs/merchant_id", "x-dtype": "UInt64"},
                "v": {"type": ["number", "null"], "minimum": 0, "x-dtype": "Float64", "x-allow-nonfinite": True},
                "w": {"type": "integer", "x-dtype": "Int64"},
            },
        }},
    }
    (tmp_path / "schemas.test.yaml").write_text(yaml.safe_dump(pack))
    return tmp_path


def test_nullable_column_and_allowed_non_finite_values_pass(test_pack_dir):
    frame = pl.DataFrame({"k": [1, 2, 3], "v": [None, float("inf"), float("nan")], "w": [0, 0, 0]},
                         schema={"k": pl.UInt64, "v": pl.Float64, "w": pl.Int64})
    assert tables.table_violations(frame, "schemas.test.yaml#/model/t", primary_key=("k",),
                                      writer_sort=("k",), contracts_dir=test_pack_dir) == []
    negative = frame.with_columns(v=pl.Series([None, -1.0, 2.0]))
    found = tables.table_violations(negative, "schemas.test.yaml#/model/t", primary_key=("k",),
                                       contracts_dir=test_pack_dir)
    assert [(v.kind, v.example_key) for v in found] == [("range", {"k": 2})]


def test_table_column_without_dtype_is_a_contract_error(test_pack_dir):
    pack = yaml.safe_load((test_pack_dir / "schemas.test.yaml").read_text())
    del pack["model"]["t"]["properties"]["w"]["x-dtype"]
    (test_pack_dir / "schemas.test.yaml").write_text(yaml.safe_dump(pack))
    with pytest.raises(ArrivalError) as err:
        table_schema.polars_schema("schemas.test.yaml#/model/t", contracts_dir=test_pack_dir)
    assert err.value.code == "5B.CONTRACT_INVALID" and "'w'" in err.value.message


def test_table_column_with_an_uncompiled_keyword_is_a_contract_error(test_pack_dir):
    pack = yaml.safe_load((test_pack_dir / "schemas.test.yaml").read_text())
    pack["model"]["t"]["properties"]["w"]["multipleOf"] = 2
    (test_pack_dir / "schemas.test.yaml").write_text(yaml.safe_dump(pack))
    with pytest.raises(ArrivalError) as err:
        table_schema.polars_schema("schemas.test.yaml#/model/t", contracts_dir=test_pack_dir)
    assert "multipleOf" in err.value.message


def test_key_column_missing_from_the_schema_is_a_contract_error(counts):
    with pytest.raises(ArrivalError) as err:
        tables.table_violations(counts.head(10), COUNTS, primary_key=("scenario_id", "zone"))
    assert err.value.code == "5B.CONTRACT_INVALID" and "zone" in err.value.message


def test_every_iana_zone_matches_the_tzid_pattern():
    zones = zoneinfo.available_timezones()
    if not zones:
        pytest.skip("no IANA time-zone database on this machine")
    pattern = contracts.load_schema("schemas.layer1.yaml#/$defs/tzid")["pattern"]
    assert sorted(z for z in zones if not pl.Series([z]).str.contains(pattern)[0]) == []
    assert not pl.Series(["Europe/../Paris", "/etc", "Europe/"]).str.contains(pattern).any()


def test_the_dictionary_says_which_state_publishes_each_output_its_companions_and_what_is_optional():
    entries = [e for e in contracts.load_dictionary().values() if e.owner_segment == "5B" and e.kind == "output"]
    by_state = {code: contracts.outputs_of(code) for code in ("S0", "S1", "S2", "S3", "AUDIT")}
    assert by_state == {
        "S0": ("sealed_inputs_5B", "s0_gate_receipt_5B"),
        "S1": ("s1_time_grid_5B", "s1_grouping_5B"),
        "S2": ("s2_realised_intensity_5B", "s2_latent_field_5B", "rng_event_arrival_lgcp_gaussian"),
        "S3": ("s3_bucket_counts_5B", "rng_event_arrival_bucket_count"),
        "AUDIT": ("rng_audit_log_5B",),
    }
    companions = {e.id: e.companion_of for e in entries if e.companion_of}
    assert companions == {"rng_trace_arrival_lgcp_gaussian": "rng_event_arrival_lgcp_gaussian",
                          "rng_trace_arrival_bucket_count": "rng_event_arrival_bucket_count"}
    for trace, owner in companions.items():  # a companion is published by its owner's state
        assert contracts.dataset(trace).state == contracts.dataset(owner).state
        assert contracts.companions(owner) == (trace,)
    assert [e.id for e in entries if e.optional] == ["s2_latent_field_5B"]
    assert {p.code: p.outputs for p in pipeline.STATES} == by_state
