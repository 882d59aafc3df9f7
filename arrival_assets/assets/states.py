"""The state assets: thin multi-assets calling `arrival_core.pipeline` for one (scenario, seed) partition, each
with its outputs' checks in its own step."""

import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from arrival_core import checks as core_checks
from arrival_core import contracts, parallel, pipeline
from arrival_core.bench import cpu_seconds
from arrival_core.version import code_version

from .. import plots
from ..checks import (
    evaluate_materialised_partitions,
    evaluate_state_checks,
    state_check_specs,
    stored_identity,
)
from ..partitions import grid
from ..resources import StoreResource
from .columns import column_schema
from .outcomes import (
    PROGRESS_PREFIX,
    TIMES_PREFIX,
    call_core,
    materialize,
    partition_of,
    sealed_parameter_hash,
)

DESCRIPTIONS: dict[str, str] = {
    "sealed_inputs_5B": "The closed set of inputs 5B may read, each with its digest, role and read scope.",
    "s0_gate_receipt_5B": "S0 receipt: upstream HashGate verdicts, scenario set and sealed-inputs digest.",
    "s1_time_grid_5B": "Per-scenario bucket grid (UTC bounds, flags, local annotations).",
    "s1_grouping_5B": "Pooling group of every (merchant, zone, channel); a group shares one latent field.",
    "s2_realised_intensity_5B": "Realised per-bucket intensity: λ_target × the group's latent factor ξ.",
    "s2_latent_field_5B": "Diagnostic latent field per (group, bucket): Z, σ, length scale, clipped factor.",
    "rng_event_arrival_lgcp_gaussian": "RNG log of the latent fields: one event per (scenario, group).",
    "s3_bucket_counts_5B": "Arrival count per (entity, bucket), drawn from λ_realised (Poisson or NB2).",
    "rng_event_arrival_bucket_count": "RNG log of the counts: one Philox event per drawing (entity, bucket).",
    "rng_audit_log_5B": "RNG audit record reconciling both families' events, traces and totals.",
}


class PhaseClock:
    """Wall and CPU seconds of a step's phases (the state, its pictures, its checks), logged as one line at the
    step's end so a user sees where a partition's time goes."""

    def __init__(self) -> None:
        self.phases: list[list] = []
        self._mark = self._now()
        self._notes: dict[str, str] = {}

    @staticmethod
    def _now() -> tuple[float, float]:
        return time.perf_counter(), cpu_seconds()

    def lap(self, phase: str) -> None:
        """Close `phase`: the time since the previous lap (or the clock's start)."""
        now = self._now()
        self.phases.append([phase, now[0] - self._mark[0], now[1] - self._mark[1]])
        self._mark = now

    def lap_beside(self, phase: str, beside: str, wall: float, cpu: float, earlier: float = 0.0) -> None:
        """Close `phase`, during which `beside` ran on a thread of its own for `wall` seconds and `cpu` CPU seconds,
        `earlier` of them before the previous lap (counted for `beside`, not for either phase); `beside` is listed
        first."""
        now = self._now()
        if earlier:
            self.phases[-1][2] -= earlier
        self.phases.append([beside, wall, cpu])
        self.phases.append([phase, now[0] - self._mark[0], now[1] - self._mark[1] - (cpu - earlier)])
        self._notes[beside] = " beside the state's last writes and the checks" if earlier else " beside the checks"
        self._mark = now

    def move_cpu(self, seconds: float, source: str, target: str, note: str) -> None:
        """Count CPU seconds spent inside one phase for another (the checks made while the state streamed)."""
        by_name = {p[0]: p for p in self.phases}
        by_name[source][2] -= seconds
        by_name[target][2] += seconds
        self._notes[target] = f" of which {seconds:.2f} CPU s {note}"

    def line(self) -> str:
        return TIMES_PREFIX + ", ".join(f"{phase} {wall:.2f} s ({cpu:.2f} CPU s){self._notes.get(phase, '')}"
                                            for phase, wall, cpu in self.phases)


def progress_logger(context: dg.AssetExecutionContext) -> Callable[[str, int, int], None]:
    """Progress of a streaming state in the step's log, `<state>: <done> / <total> rows`: the first chunk, then
    at most one line every `progress_seconds` (config/runtime.yaml), and the last. Each line is an event the
    instance stores (about 10 ms on SQLite, on the stream's critical path): a line per chunk cost a reference
    partition 0.7 s."""
    every = contracts.runtime_settings()["progress_seconds"]
    last: list[float] = []

    def log(state: str, done: int, total: int) -> None:
        now = time.monotonic()
        if last and done < total and now - last[0] < every:
            return
        last[:] = [now]
        context.log.info(f"{PROGRESS_PREFIX}{state}: {done:,} / {total:,} rows")

    return log


def previous_pictures(context: dg.AssetExecutionContext, outputs: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The pictures of the partition's latest materialisations (a verified state draws none: its data is the
    same, so the pictures are too)."""
    out: dict[str, dict[str, Any]] = {}
    for asset in outputs:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[str(context.partition_key)]),
            limit=1).records
        mat = records[0].asset_materialization if records else None
        if mat is not None and "plot" in mat.metadata:
            out[asset] = {"plot": mat.metadata["plot"]}
    return out


def picture_metadata(diagnostics: Mapping[str, Any], partition: str) -> dict[str, dict[str, Any]]:
    """The PNG pictures of S2 and S3, each with a table of the numbers it shows, as the `plot` Markdown entry of
    their main output (none when the state computed nothing)."""
    out: dict[str, dict[str, Any]] = {}
    starts = diagnostics.get("bucket_start_utc")
    if "lambda_target_per_bucket" in diagnostics:
        dataset = "s2_realised_intensity_5B"
        target, realised = diagnostics["lambda_target_per_bucket"], diagnostics["lambda_realised_per_bucket"]
        png = plots.s2_intensity_png(target, realised, diagnostics["top_group_factors"],
                                     plots.Frame(dataset, partition, starts))
        facts = [("buckets", len(target)), ("first bucket (UTC)", str(starts[0])[:19]),
                 ("Σ λ_target", float(target.sum())), ("Σ λ_realised", float(realised.sum())),
                 ("Σ λ_realised / Σ λ_target", float(realised.sum() / target.sum()) if target.sum() else "—"),
                 ("groups drawn (largest)", ", ".join(diagnostics["top_group_factors"]) or "—")]
        out[dataset] = {"plot": dg.MetadataValue.md(plots.plot_markdown(
            png, f"{dataset} {partition}: total λ_target and λ_realised per bucket; ξ of the largest groups", facts))}
    if "counts_per_bucket" in diagnostics:
        dataset = "s3_bucket_counts_5B"
        counts, mu, variance = (diagnostics[k] for k in ("counts_per_bucket", "mu_per_bucket", "variance_per_bucket"))
        histogram = diagnostics["count_histogram"]
        png = plots.s3_counts_png(counts, mu, variance, histogram, plots.Frame(dataset, partition, starts))
        facts = [("buckets", len(mu)), ("first bucket (UTC)", str(starts[0])[:19]),
                 ("Σ N", int(counts.sum())), ("Σ μ", float(mu.sum())),
                 ("buckets outside Σ μ ± 3σ", (f"{plots.outside_band(counts, mu, variance)} of {len(mu)} (about "
                                               f"{len(mu) * 0.0027:.1f} expected)")),
                 (f"histogram rows ({histogram.label})", histogram.rows)]
        out[dataset] = {"plot": dg.MetadataValue.md(plots.plot_markdown(
            png, f"{dataset} {partition}: total counts per bucket against total μ ± 3σ; a count histogram against "
                 "the law", facts))}
    return out


@dataclass
class Drawn:
    """The pictures a state's step drew on a thread of its own (beside its checks), what stopped them, and the
    thread's wall and CPU seconds."""

    pictures: dict[str, dict[str, Any]]
    failure: Exception | None
    wall: float
    cpu: float


def draw_pictures(diagnostics: Mapping[str, Any], partition: str) -> Drawn:
    """The state's pictures, timed on the calling thread; a failure is kept, not raised (see `drawn_pictures`)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overflow and degenerate-axis warnings of extreme values
            pictures, failure = picture_metadata(diagnostics, partition), None
    except Exception as exc:  # noqa: BLE001 - any failure of a picture leaves the committed state as it is
        pictures, failure = {}, exc
    return Drawn(pictures, failure, time.perf_counter() - wall, time.thread_time() - cpu)


class Pictures:
    """A state's pictures, drawn on a thread of their own: from the moment a streamed state's diagnostics are
    complete (`start`, its `RunOptions.diagnosed`), while its outputs finish and publish, else once it returned;
    with the CPU seconds the drawing has taken so far, so the step's phase line counts them for neither."""

    def __init__(self, partition: str) -> None:
        self._partition = partition
        self._lock = threading.Lock()
        self._result: Callable[[], Drawn] | None = None
        self._clock: tuple[int, float] | None = None  # the drawing thread's CPU clock and its reading at the start
        self._spent = 0.0  # the drawing's CPU seconds once it has ended

    def start(self, diagnostics: Mapping[str, Any]) -> None:
        """Start drawing from these diagnostics (the first call only)."""
        with self._lock:
            if self._result is None:
                self._result = parallel.soon(lambda: self._draw(diagnostics), own_thread=True)

    def _draw(self, diagnostics: Mapping[str, Any]) -> Drawn:
        clock = time.pthread_getcpuclockid(threading.get_ident())
        with self._lock:
            self._clock = (clock, time.clock_gettime(clock))
        drawn = draw_pictures(diagnostics, self._partition)
        with self._lock:
            self._clock, self._spent = None, drawn.cpu
        return drawn

    def cpu_so_far(self) -> float:
        """CPU seconds the drawing has taken until now (all of them once it has ended; 0 before it starts)."""
        with self._lock:  # the drawing thread is alive while its clock is kept: reading it is valid
            if self._clock is not None:
                return time.clock_gettime(self._clock[0]) - self._clock[1]
            return self._spent

    def drawn(self, diagnostics: Mapping[str, Any]) -> Drawn:
        """The pictures, started from `diagnostics` now if they were not before (a state verified, not streamed)."""
        self.start(diagnostics)
        return self._result()


def early_pictures() -> bool:
    """Whether a streamed state's pictures can start before it returns: the drawing thread's CPU clock must be
    readable to keep the state's CPU seconds apart from the pictures' (Linux; elsewhere they start after)."""
    return hasattr(time, "pthread_getcpuclockid")


def drawn_pictures(context: dg.AssetExecutionContext, drawn: Drawn, outputs: tuple[str, ...]
                   ) -> dict[str, dict[str, Any]]:
    """The state's pictures (or the partition's previous ones). The state has committed when they are drawn, so
    a picture that cannot be drawn (values no axis can hold, such as λ near the float maximum) is a warning in
    the step's log and no picture: it never fails, or uncodes, a state whose files are published."""
    if drawn.failure is not None:
        exc = drawn.failure
        context.log.warning(f"no picture for {', '.join(outputs)}: {type(exc).__name__}: {exc}")
        return {}
    try:
        return drawn.pictures or previous_pictures(context, outputs)
    except Exception as exc:  # noqa: BLE001 - as above
        context.log.warning(f"no picture for {', '.join(outputs)}: {type(exc).__name__}: {exc}")
        return {}


# What each state's assets read (S0 reads every sealed input; filled in by build_state_assets).
DEPS: dict[str, tuple[str, ...]] = {
    "s0_gate": (),
    "s1_plan": (
        "sealed_inputs_5B",
        "s0_gate_receipt_5B",
        "scenario_manifest_5A",
        "time_grid_policy_5B",
        "grouping_policy_5B",
        "merchant_zone_scenario_local_5A",
        "merchant_zone_profile_5A",
        "virtual_classification_3B",
    ),
    "s2_latent": (
        "s0_gate_receipt_5B",
        "s1_time_grid_5B",
        "s1_grouping_5B",
        "merchant_zone_scenario_local_5A",
        "arrival_lgcp_config_5B",
        "arrival_rng_policy_5B",
    ),
    "s3_counts": (
        "s0_gate_receipt_5B",
        "s1_grouping_5B",
        "s2_realised_intensity_5B",
        "rng_event_arrival_lgcp_gaussian",  # S2's RNG accounting must hold before counts are drawn
        "arrival_count_config_5B",
        "arrival_rng_policy_5B",
    ),
    "rng_audit": ("rng_event_arrival_lgcp_gaussian", "rng_event_arrival_bucket_count", "arrival_rng_policy_5B"),
}

STEP_DESCRIPTIONS: dict[str, str] = {
    "s0_gate": "S0: verify the upstream HashGates and seal every input with its digest.",
    "s1_plan": "S1: build the scenario's time grid and assign every entity to a pooling group.",
    "s2_latent": "S2: sample one correlated log-Gaussian field per group and apply it to λ_target.",
    "s3_counts": "S3: draw a count per (entity, bucket) from the realised intensity.",
    "rng_audit": "Audit: reconcile both RNG families' events, traces and totals for the partition.",
}


def build_state_asset(step: pipeline.State, sealed_input_keys: tuple[str, ...]) -> dg.AssetsDefinition:
    """Build the multi-asset of one state; its body resolves the partition and calls the pipeline runner."""
    deps = DEPS[step.name] or sealed_input_keys
    specs = [
        dg.AssetSpec(
            key=out,
            group_name=step.group,
            description=DESCRIPTIONS[out],
            deps=[d for d in deps if d not in step.outputs],
            skippable=contracts.dataset(out).optional,  # a policy may switch it off
            kinds={contracts.dataset(out).format, "polars"} if contracts.dataset(out).format == "parquet"
            else {contracts.dataset(out).format},
            code_version=code_version(),
            metadata={"dagster/column_schema": schema} if (schema := column_schema(out)) else None,
        )
        for out in step.outputs
    ]

    @dg.multi_asset(name=step.name, specs=specs, check_specs=state_check_specs(step.outputs), can_subset=True,
                    partitions_def=grid, description=STEP_DESCRIPTIONS[step.name])
    def _state(context: dg.AssetExecutionContext, store: StoreResource
               ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult | dg.AssetCheckEvaluation]:
        st = call_core(context, store.open)
        selected = {k.to_user_string() for k in context.selected_asset_keys}
        if not selected:  # a check-only run (the UI's "Execute all"): the stored files are checked, nothing written
            if not context.has_partition_key:  # as the UI sends it: the checks of every materialised partition
                yield from evaluate_materialised_partitions(context, st, step)
                return
            yield from evaluate_state_checks(context, st, stored_identity(context, st, step), step, recall=False)
            return
        part = partition_of(context)
        # A partition materialised before is verified, not recomputed; every step after S0 keeps the identity S0
        # sealed in this run (S0 itself seals one from the live policies and ignores it).
        # S2's and S3's big outputs are checked as they stream, each row group on the worker that encoded it.
        streamed = core_checks.StreamChecks(st) if step.streams else None
        # The pictures are drawn on a thread of their own from the moment a streamed state's diagnostics are
        # complete: while its outputs finish and publish, and then beside its checks. They enter the metadata only
        # once the state has committed; the materialisations still come first, then the checks.
        drawing = Pictures(str(context.partition_key))
        options = pipeline.RunOptions(run_id=context.run.run_id, parameter_hash=sealed_parameter_hash(context),
                                      progress=progress_logger(context), reuse=True, observe=streamed,
                                      diagnosed=drawing.start if step.streams and early_pictures() else None)
        clock = PhaseClock()
        if step.streams:
            plots.preload()
        result = call_core(context, step.runner, st, part, options)
        drawn_before = drawing.cpu_so_far()
        clock.lap("state")
        drawing.start(result.diagnostics)
        known = {k: v for k, v in result.diagnostics.items() if k in core_checks.KNOWN}
        try:
            checked = list(evaluate_state_checks(context, st, result.identity, step, recall=True,
                                                 streamed=streamed, known=known))
            stopped = None
        except BaseException as exc:  # noqa: BLE001 - raised once the materialisations are yielded
            checked, stopped = [], exc
        drawn = drawing.drawn(result.diagnostics)
        clock.lap_beside("checks", "pictures", drawn.wall, drawn.cpu, earlier=drawn_before)
        if streamed is not None and streamed.cpu_seconds:
            clock.move_cpu(streamed.cpu_seconds, "state", "checks", "in the state's stream")
        pictures = drawn_pictures(context, drawn, step.outputs)
        by_id = {p.dataset_id: p for p in result.published}
        metrics = result.report.get("metrics") or {}
        tokens = result.identity.tokens()
        for out in step.outputs:
            if out not in by_id or out not in selected:
                continue  # only skippable outputs may be absent; Dagster fails the step otherwise
            extra: dict[str, object] = {"run_report": dg.MetadataValue.path(str(result.report_path))}
            for companion in contracts.companions(out):  # an RNG trace beside its events
                if companion in by_id:
                    extra[f"{companion}.path"] = dg.MetadataValue.path(str(by_id[companion].path))
                    extra[f"{companion}.digest"] = by_id[companion].sha256
                    extra[f"{companion}.rows"] = by_id[companion].rows or 0
            extra |= pictures.get(out, {})
            yield materialize(out, by_id[out], identity_tokens=tokens, metrics=metrics, extra=extra)
        # The state's files were just computed or verified: its checks follow in the same step; a failed ERROR
        # check fails the step, so nothing downstream starts.
        context.log.info(clock.line())
        if stopped is not None:
            raise stopped
        yield from checked

    return _state


def build_state_assets(sealed_input_keys: tuple[str, ...]) -> list[dg.AssetsDefinition]:
    """Build the five state assets; S0 depends on every sealed input."""
    return [build_state_asset(step, sealed_input_keys) for step in pipeline.STATES]
