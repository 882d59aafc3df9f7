"""The checks of S2's and S3's big tables made while they stream (each row group decoded on the worker that encoded
it, beside the inputs of its rows) give exactly the outcomes the stored files give, whatever the threads, chunks
and row-group size; and a defect the engine writes fails them in the stream, naming its row."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from s2s3lib import edited_config, store

from arrival_core import checks, parallel, pipeline, sink
from arrival_core.checks import evaluation
from arrival_core.identity import PartitionKey
from arrival_core.pipeline import realise
from arrival_core.world import WorldInfo, ensure_seed

STREAMED = ("s2_realised_intensity_5B", "s2_latent_field_5B", "s3_bucket_counts_5B", "rng_event_arrival_bucket_count")


@pytest.fixture
def threads():
    yield parallel.set_threads
    parallel.set_threads(None)


def _realise_with_stream_checks(st, key: PartitionKey, chunk: int | None = None) -> tuple[dict, object]:
    """Run S0 → audit with the stream's checks on S2 and S3; ({dataset: outcomes from the stream, taken once the
    audit is written, as the stored files' are}, identity)."""
    observers = []
    for state in pipeline.STATES:
        observer = checks.StreamChecks(st) if state.streams else None
        options = pipeline.RunOptions(observe=observer, chunk_entities=chunk if state.streams else None)
        result = state.runner(st, key, options)
        observers += [observer] if observer is not None else []
    streamed = {dataset: evaluation._outcomes(dataset, lambda o=observer, d=dataset: o.results(d))
                for observer in observers for dataset in observer.streamed()}
    return streamed, result.identity


def _stationary_nb2(tmp_path: Path) -> Path:
    edited_config(tmp_path, "arrival_count_config_5B", lambda d: d.update(count_law_id="nb2"), name="nb2")

    def stationary(doc: dict) -> None:
        doc["latent_model_id"], doc["kernel_id"] = "log_gaussian_stationary_v1", "matern32_v1"

    return edited_config(tmp_path, "arrival_lgcp_config_5B", stationary, name="nb2")


@pytest.mark.parametrize("variant", ["poisson-ou", "nb2-stationary"])
def test_the_stream_and_the_stored_files_give_the_same_outcomes_whatever_the_threads(
        variant, tiny_world: WorldInfo, tmp_path: Path, threads, monkeypatch):
    monkeypatch.setattr(sink, "ROW_GROUP_ROWS", 2_053)  # a prime: row groups begin and end inside entities
    config = None if variant == "poisson-ou" else _stationary_nb2(tmp_path)
    first = None
    for count, chunk in ((1, None), (3, 7)):
        threads(count)
        root = tmp_path / f"w{count}"
        shutil.copytree(tiny_world.root, root)
        st = store(root, config)
        streamed, ident = _realise_with_stream_checks(st, PartitionKey(42, "stress_v1"), chunk)
        assert sorted(streamed) == sorted(STREAMED)
        for dataset in STREAMED:
            stored = checks.evaluate(st, ident, dataset)
            assert streamed[dataset] == stored, dataset  # messages, facts and sums alike
            assert all(o.passed for o in stored if o.severity == "ERROR"), [o.summary for o in stored]
        first = first or streamed
        assert streamed == first  # and alike at any thread count and chunk size


def _one_changed(table: pa.Table, column: str, row: int, value) -> pa.Table:
    values = table[column].to_numpy().copy()
    values[row] = value
    return table.set_column(table.schema.get_field_index(column), column, pa.array(values))


def _failed(outcomes) -> dict[str, str]:
    return {o.name: o.summary for o in outcomes if not o.passed}


def test_defects_the_engine_writes_fail_the_stream_checks_at_their_row(tiny_world_copy: WorldInfo, monkeypatch):
    """A λ_realised off its law (S2), a ξ in the latent field that is not the one applied (S2) and an RNG event
    that logs another bucket (S3), each made by the engine as it writes: the stream's checks fail the rule each
    breaks, naming the row, while the state itself publishes (only its checks judge these rules)."""
    realised_table, field_table, events_table = (realise._realised_table, realise._latent_field_table,
                                                 realise._count_events_table)

    def bad_realised(domain, e0, e1, identity, lgcp, target, factor, realised):
        table = realised_table(domain, e0, e1, identity, lgcp, target, factor, realised)
        return _one_changed(table, "lambda_realised", 5, float(realised[5]) * 2 + 1) if e0 == 0 else table

    def bad_field(field, domain, identity):
        return _one_changed(field_table(field, domain, identity), "lambda_random_component", 3, 7.0)

    def bad_events(domain, e0, e1, identity, policy, rng, draws):
        table = events_table(domain, e0, e1, identity, policy, rng, draws)
        return _one_changed(table, "bucket_index", 2, int(table["bucket_index"][2].as_py()) + 1) if e0 == 0 else table

    monkeypatch.setattr(realise, "_realised_table", bad_realised)
    monkeypatch.setattr(realise, "_latent_field_table", bad_field)
    monkeypatch.setattr(realise, "_count_events_table", bad_events)
    streamed, _ = _realise_with_stream_checks(store(tiny_world_copy), PartitionKey(42, "baseline_v1"))
    realised = _failed(streamed["s2_realised_intensity_5B"])
    assert list(realised) == [checks.NUMERIC_VALID] and "λ_realised ≠ min(λ_baseline·ξ, lambda_max)" in \
        realised[checks.NUMERIC_VALID], realised
    key = next(o for o in streamed["s2_realised_intensity_5B"] if not o.passed).metadata["offending_keys"][0]
    assert key["bucket_index"] == 5
    latent = _failed(streamed["s2_latent_field_5B"])
    assert checks.NUMERIC_VALID in latent and "ξ differs from the ξ applied to s2_realised_intensity_5B" in \
        latent[checks.NUMERIC_VALID], latent
    events = _failed(streamed["rng_event_arrival_bucket_count"])
    assert set(events) == {checks.PRIMARY_KEY_UNIQUE, checks.RNG_ACCOUNTING}, events
    assert "event row 2 is not the count row" in events[checks.PRIMARY_KEY_UNIQUE]
    assert _failed(streamed["s3_bucket_counts_5B"]) == {}


def test_a_realised_defect_in_a_later_chunk_of_a_row_group_is_named_at_its_own_row(tiny_world_copy: WorldInfo,
                                                                                    monkeypatch):
    """A row group joins several chunks of the sealed λ: its rows are judged chunk by chunk, so a defect in the
    third chunk must still be counted once and named at its own row of the file."""
    realised_table = realise._realised_table
    chunk, h = 3, None

    def bad_realised(domain, e0, e1, identity, lgcp, target, factor, realised):
        nonlocal h
        h = domain.buckets
        table = realised_table(domain, e0, e1, identity, lgcp, target, factor, realised)
        return _one_changed(table, "lambda_realised", h + 5, float(realised[h + 5]) * 2 + 1) if e0 == 2 * chunk \
            else table

    monkeypatch.setattr(realise, "_realised_table", bad_realised)
    st = store(tiny_world_copy)
    streamed, identity = _realise_with_stream_checks(st, PartitionKey(42, "baseline_v1"), chunk=chunk)
    failed = next(o for o in streamed["s2_realised_intensity_5B"] if not o.passed)
    assert failed.name == checks.NUMERIC_VALID and "1 row(s): λ_realised ≠ min(λ_baseline·ξ, lambda_max)" in \
        failed.summary, failed.summary
    row = (2 * chunk + 1) * h + 5  # entity 7 of the grid, bucket 5
    assert row < sink.ROW_GROUP_ROWS  # inside the first row group, which also holds the chunks before it
    published = pq.read_table(pipeline.output_path(st, "s2_realised_intensity_5B", identity)).slice(row, 1)
    key = failed.metadata["offending_keys"][0]
    assert {k: key[k] for k in ("merchant_id", "bucket_index")} == \
        {k: published[k][0].as_py() for k in ("merchant_id", "bucket_index")}


@pytest.mark.parametrize("chunk,planted_in", [(None, 0), (3, 6)])
def test_a_count_that_decodes_to_another_than_was_drawn_fails_in_the_stream(tiny_world_copy: WorldInfo,
                                                                            monkeypatch, chunk, planted_in):
    """The counts the RNG events were drawn for travel beside the count rows: a published count_N that differs
    from its draw (the law's replay may not sample that row) fails NUMERIC_VALID there, named at its row also when
    it lies in a later chunk of its row group (the rows are judged chunk by chunk of the draws)."""
    counts_table = realise._counts_table
    planted: list[int] = []

    def bad_counts(domain, e0, e1, identity, policy, mu, draws):
        table = counts_table(domain, e0, e1, identity, policy, mu, draws)
        if e0 != planted_in:
            return table
        drawing = int(np.flatnonzero(mu > policy.lambda_zero_eps)[0])
        planted.append(e0 * domain.buckets + drawing)
        return _one_changed(table, "count_N", drawing, int(draws.count[drawing]) + 1)

    monkeypatch.setattr(realise, "_counts_table", bad_counts)
    st = store(tiny_world_copy)
    streamed, identity = _realise_with_stream_checks(st, PartitionKey(42, "baseline_v1"), chunk=chunk)
    counted = _failed(streamed["s3_bucket_counts_5B"])
    assert "1 row(s): count_N decodes to another count than was drawn" in counted[checks.NUMERIC_VALID], counted
    failed = next(o for o in streamed["s3_bucket_counts_5B"] if o.name == checks.NUMERIC_VALID)
    published = pq.read_table(pipeline.output_path(st, "s3_bucket_counts_5B", identity)).slice(planted[0], 1)
    key = failed.metadata["offending_keys"][0]
    assert {k: key[k] for k in ("merchant_id", "bucket_index")} == \
        {k: published[k][0].as_py() for k in ("merchant_id", "bucket_index")}


def test_counts_whose_pages_are_s2s_are_not_decoded_and_others_are_judged_as_decoded(tiny_world_copy: WorldInfo,
                                                                                      monkeypatch):
    """λ_realised and μ of a count row group are left undecoded only when their pages are byte for byte S2's
    λ_realised pages of the same rows; a count table whose μ (or λ_realised) differs from S2's in one row is
    decoded and fails NUMERIC_VALID at that row."""
    from arrival_core.checks import grid_rows

    proved: list[bool] = []
    known_by_bytes = grid_rows.CountsCheck.known_by_bytes

    def counted(self, group):
        known = known_by_bytes(self, group)
        proved.append(bool(known))
        return known

    monkeypatch.setattr(grid_rows.CountsCheck, "known_by_bytes", counted)
    streamed, _ = _realise_with_stream_checks(store(tiny_world_copy), PartitionKey(42, "baseline_v1"))
    assert proved and all(proved) and _failed(streamed["s3_bucket_counts_5B"]) == {}

    counts_table = realise._counts_table
    rows_changed: list[int] = []

    def bad_counts(domain, e0, e1, identity, policy, mu, draws):
        table = counts_table(domain, e0, e1, identity, policy, mu, draws)
        row = int(np.flatnonzero(mu > policy.lambda_zero_eps)[0])  # still drawing: the ledgers stay whole
        rows_changed.append(row)
        return _one_changed(table, "mu", row, float(mu[row]) * 1.5) if e0 == 0 else table

    monkeypatch.setattr(realise, "_counts_table", bad_counts)
    proved.clear()
    ensure_seed(tiny_world_copy.root, 43)
    streamed, _ = _realise_with_stream_checks(store(tiny_world_copy), PartitionKey(43, "baseline_v1"))
    assert proved[0] is False and all(proved[1:])  # only the changed row group is decoded
    failed = _failed(streamed["s3_bucket_counts_5B"])
    assert "μ ≠ λ_realised" in failed[checks.NUMERIC_VALID], failed
    key = next(o for o in streamed["s3_bucket_counts_5B"] if o.name == checks.NUMERIC_VALID).metadata[
        "offending_keys"][0]
    assert key["bucket_index"] == rows_changed[0]


def test_count_keys_whose_pages_are_s2s_placed_rows_are_not_decoded_and_misplaced_keys_fail_either_way(
        tiny_world_copy: WorldInfo, monkeypatch):
    """A count row group's key columns are left undecoded only when their pages are byte for byte those of S2's row
    group of the same rows that this process decoded and found in place. Keys misplaced by the engine in both
    tables alike (the same wrong bytes) are not taken as placed: S2's row group was not in place, so S3's is
    decoded and both fail DOMAIN_COMPLETE at the row; keys misplaced in the counts alone make their pages differ,
    so they are decoded and fail there."""
    from arrival_core import entity_grid
    from arrival_core.checks import grid_rows

    placed: list[bool] = []
    placed_by_bytes = grid_rows.CountsCheck.placed_by_bytes
    monkeypatch.setattr(grid_rows.CountsCheck, "placed_by_bytes",
                        lambda self, group: placed.append((got := placed_by_bytes(self, group)) is not None) or got)
    streamed, _ = _realise_with_stream_checks(store(tiny_world_copy), PartitionKey(42, "baseline_v1"))
    assert placed and all(placed) and _failed(streamed["s3_bucket_counts_5B"]) == {}

    entity_columns, counts_table = entity_grid.entity_columns, realise._counts_table

    def swapped(domain, e0, e1, *, with_group, rows=None):  # buckets 0 and 1 of the first entity change places
        cols = entity_columns(domain, e0, e1, with_group=with_group, rows=rows)
        if rows is None and e0 == 0:
            bucket = cols["bucket_index"].to_numpy().copy()
            bucket[[0, 1]] = bucket[[1, 0]]
            cols["bucket_index"] = pa.array(bucket)
        return cols

    def bad_counts(domain, e0, e1, identity, policy, mu, draws):  # the counts alone
        table = counts_table(domain, e0, e1, identity, policy, mu, draws)
        return _one_changed(table, "bucket_index", 0, 1) if e0 == 0 else table

    for seed, planted, both in ((43, (entity_grid, "entity_columns", swapped), True),
                                (44, (realise, "_counts_table", bad_counts), False)):
        with monkeypatch.context() as planting:
            planting.setattr(*planted)
            placed.clear()
            ensure_seed(tiny_world_copy.root, seed)
            streamed, _ = _realise_with_stream_checks(store(tiny_world_copy), PartitionKey(seed, "baseline_v1"))
        assert placed[0] is False and all(placed[1:]), (seed, placed)  # only the first row group is decoded
        failed = _failed(streamed["s3_bucket_counts_5B"])
        assert "row 0 is not where grid × grouping puts it" in failed[checks.DOMAIN_COMPLETE], (seed, failed)
        realised_failed = _failed(streamed["s2_realised_intensity_5B"])
        assert (checks.DOMAIN_COMPLETE in realised_failed) == both, (seed, realised_failed)


def test_counts_whose_proof_cannot_be_made_are_decoded(tiny_world_copy: WorldInfo, monkeypatch):
    """When S2's file cannot be read for the proof, the count row groups are decoded and judged as such: the
    proof only ever saves a decode, it never fails a check."""
    from arrival_core.checks import grid_rows

    def unreadable(self):
        raise OSError("S2's file is gone")

    proved: list[bool] = []
    known_by_bytes = grid_rows.CountsCheck.known_by_bytes
    monkeypatch.setattr(grid_rows.CountsCheck, "_realised_file", property(unreadable))
    monkeypatch.setattr(grid_rows.CountsCheck, "known_by_bytes",
                        lambda self, group: proved.append(bool(known := known_by_bytes(self, group))) or known)
    streamed, _ = _realise_with_stream_checks(store(tiny_world_copy), PartitionKey(42, "baseline_v1"))
    assert proved and not any(proved)
    assert _failed(streamed["s3_bucket_counts_5B"]) == {}


def test_a_column_constant_over_row_groups_is_decoded_once_and_one_that_changes_is_judged(
        tiny_world_copy: WorldInfo, monkeypatch):
    """A small column chunk whose pages are byte for byte one already decoded (the partition's identity, the
    law's name) is not decoded again; a count_law_id written off the law in one row of a later row group makes
    that chunk's bytes differ, so it is decoded and fails NUMERIC_VALID at its row."""
    from arrival_core.checks import rows as check_rows

    monkeypatch.setattr(sink, "ROW_GROUP_ROWS", 2_053)
    repeated: dict[tuple[str, int], set[str]] = {}
    find = check_rows.RowGroupCheck._repeated

    def spied(self, group, skip):
        out = find(self, group, skip)
        repeated[(self.dataset_id, group.index)] = set(out)
        return out

    monkeypatch.setattr(check_rows.RowGroupCheck, "_repeated", spied)
    streamed, _ = _realise_with_stream_checks(store(tiny_world_copy), PartitionKey(42, "baseline_v1"))
    counts = {i: names for (d, i), names in repeated.items() if d == "s3_bucket_counts_5B"}
    assert len(counts) >= 3, counts
    assert {d: _failed(streamed[d]) for d in STREAMED} == {d: {} for d in STREAMED}
    assert sum(1 for names in counts.values() if {"count_law_id", "scenario_id", "parameter_hash"} <= names) >= 1
    events = [names for (d, _), names in repeated.items() if d == "rng_event_arrival_bucket_count"]
    assert any({"module", "family_id", "manifest_fingerprint"} <= names for names in events)

    counts_table = realise._counts_table
    changed: list[int] = []

    def off_law(domain, e0, e1, identity, policy, mu, draws):
        table = counts_table(domain, e0, e1, identity, policy, mu, draws)
        if e0 == 0:
            row = 3 * 2_053 + 5  # inside the fourth row group
            changed.append(row)
            laws = table["count_law_id"].to_pylist()
            laws[row] = "nb2"
            table = table.set_column(table.schema.get_field_index("count_law_id"), "count_law_id",
                                     pa.array(laws, table.schema.field("count_law_id").type))
        return table

    monkeypatch.setattr(realise, "_counts_table", off_law)
    repeated.clear()
    ensure_seed(tiny_world_copy.root, 43)
    streamed, _ = _realise_with_stream_checks(store(tiny_world_copy), PartitionKey(43, "baseline_v1"))
    assert changed and "count_law_id" not in repeated[("s3_bucket_counts_5B", 3)]
    failed = _failed(streamed["s3_bucket_counts_5B"])
    assert "count_law_id is not poisson" in failed[checks.NUMERIC_VALID], failed
    key = next(o for o in streamed["s3_bucket_counts_5B"] if o.name == checks.NUMERIC_VALID).metadata[
        "offending_keys"][0]
    assert key["bucket_index"] == changed[0] % 2_053 or key  # the row's grid key (its bucket within its entity)


def test_checks_in_the_stream_leave_the_bytes_as_they_are(tiny_world: WorldInfo, tmp_path: Path):
    """Observing the stream changes no published byte (the golden digests hold with or without it)."""
    digests = []
    for observed in (False, True):
        root = tmp_path / str(observed)
        shutil.copytree(tiny_world.root, root)
        st = store(root)
        for state in pipeline.STATES:
            observer = checks.StreamChecks(st) if observed and state.streams else None
            state.runner(st, PartitionKey(42, "baseline_v1"), pipeline.RunOptions(observe=observer))
        digests.append({p.relative_to(root): p.read_bytes() for p in sorted((root / "data" / "layer2").rglob("*.parquet"))})
    assert digests[0] == digests[1] and len(digests[0]) >= 11


def test_the_events_replayed_are_every_stride_th_of_the_log(tiny_world_copy: WorldInfo):
    """At most replay_sample_events events, every ⌊grid rows / replay_sample_events⌋-th from the first."""
    st = store(tiny_world_copy)
    streamed, ident = _realise_with_stream_checks(st, PartitionKey(42, "baseline_v1"))
    replay = {o.name: o for o in streamed["rng_event_arrival_bucket_count"]}[checks.RNG_REPLAY]
    events = pipeline.table_rows(st.path("rng_event_arrival_bucket_count", **ident.tokens()))
    stride = pipeline.table_rows(st.path("s3_bucket_counts_5B", **ident.tokens())) // 1000
    assert replay.passed and replay.metadata["events_replayed"] == len(range(0, events, stride)) <= 1000
    assert dataclasses.asdict(replay) == dataclasses.asdict(
        {o.name: o for o in checks.evaluate(st, ident, "rng_event_arrival_bucket_count")}[checks.RNG_REPLAY])


def test_a_check_that_fails_in_the_stream_fails_its_outcomes_not_the_state(tiny_world_copy: WorldInfo, monkeypatch):
    """The state publishes whatever its checks meet: a row group that cannot be checked fails every check of its
    dataset, with the reason, once the state has committed."""
    from arrival_core.checks import rowgroups

    def unreadable(self, rows, found):
        raise pa.ArrowInvalid("row group made unreadable by the test")

    monkeypatch.setattr(rowgroups.CountsCheck, "rules", unreadable)
    st = store(tiny_world_copy)
    streamed, ident = _realise_with_stream_checks(st, PartitionKey(42, "baseline_v1"))
    assert st.path("s3_bucket_counts_5B", **ident.tokens()).is_file()  # S3 committed
    counted = streamed["s3_bucket_counts_5B"]
    assert counted and all(not o.passed and "row group made unreadable by the test" in o.summary for o in counted)
    assert all(o.passed for o in streamed["s2_realised_intensity_5B"])
