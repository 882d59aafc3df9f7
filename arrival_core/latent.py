"""S2 latent intensity: one log-Gaussian field per (scenario, group) from Philox normals, λ_realised = λ_target · ξ."""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from . import kernels, parallel
from .errors import ArrivalError, error_code
from .rng import ledger, streams, variates
from .strata import StratumLaw, parse_law

FAMILY_ID = "S2.latent_vector.v1"
STATIONARY = kernels.LATENT_MODEL_ID  # log_gaussian_stationary_v1
MODELS = ("none", "log_gaussian_ou_v1", "log_gaussian_iid_v1", STATIONARY)
_STRATA = ("scenario_band", "demand_class", "channel_group", "virtual_band")
_BATCH_NORMALS = 1 << 21  # normals drawn at once by the stationary sampler (bounds its memory, not its values)


@dataclass(frozen=True)
class StationarySettings:
    """The optional `stationary` block of the LGCP config (used by `log_gaussian_stationary_v1`); an absent key
    takes the default below (laws §8.1)."""

    embedding_tolerance: float = 1e-10
    max_embedding_factor: float = 8.0
    period_buckets: float = 24.0
    periodic_length: float = 1.0


def parse_stationary(block: Mapping | None) -> StationarySettings:
    """The `stationary` block with its defaults (the block, or any of its keys, may be absent)."""
    block = block or {}
    defaults = StationarySettings()
    return StationarySettings(**{name: float(block.get(name, getattr(defaults, name)))
                                 for name in StationarySettings.__dataclass_fields__})


@dataclass(frozen=True)
class LgcpPolicy:
    """The parsed `arrival_lgcp_config_5B`: the latent model, its σ and length-scale laws, and clipping."""

    version: str
    latent_model_id: str
    kernel_id: str
    sigma: StratumLaw  # σ: band base × demand, channel and virtual multipliers, clipped
    length: StratumLaw  # L (buckets): band base × demand multiplier, clipped
    min_factor: float
    max_factor: float
    lambda_max: float | None
    emit_latent_field: bool
    stationary: StationarySettings = field(default_factory=StationarySettings)


def parse_lgcp_policy(doc: Mapping) -> LgcpPolicy:
    """Read a schema-valid LGCP config; refuse what the schema cannot express (bounds out of order, unknown model)."""
    sigma, length, clip = doc["sigma"], doc["length_scale_buckets"], doc["clipping"]
    policy = LgcpPolicy(
        version=doc["version"],
        latent_model_id=doc["latent_model_id"],
        kernel_id=doc["kernel_id"],
        sigma=parse_law(sigma, ("demand_class", "channel_group", "virtual_band")),
        length=parse_law(length, ("demand_class",)),
        min_factor=float(clip["min_factor"]),
        max_factor=float(clip["max_factor"]),
        lambda_max=None if clip["lambda_max"] is None else float(clip["lambda_max"]),
        emit_latent_field=bool(doc["diagnostics"]["emit_latent_field_diagnostic"]),
        stationary=parse_stationary(doc.get("stationary")),
    )
    problems = []
    if policy.latent_model_id not in MODELS:
        problems.append(f"latent_model_id {policy.latent_model_id!r} is not one of {list(MODELS)}")
    if policy.latent_model_id == STATIONARY and policy.kernel_id not in kernels.KERNELS:
        problems.append(f"kernel_id {policy.kernel_id!r} is not a kernel of {STATIONARY}: {list(kernels.KERNELS)}")
    st = policy.stationary
    if not 0.0 <= st.embedding_tolerance < 1.0:
        problems.append(f"stationary.embedding_tolerance {st.embedding_tolerance} is not in [0, 1)")
    if not st.max_embedding_factor >= 1.0:
        problems.append(f"stationary.max_embedding_factor {st.max_embedding_factor} is below 1")
    for name in ("period_buckets", "periodic_length"):
        if not getattr(st, name) > 0.0:
            problems.append(f"stationary.{name} {getattr(st, name)} is not > 0")
    for name, (low, high) in (("sigma.bounds", policy.sigma.bounds), ("length_scale_buckets.bounds", policy.length.bounds),
                              ("clipping.min_factor/max_factor", (policy.min_factor, policy.max_factor))):
        if not low <= high:
            problems.append(f"{name}: low {low} exceeds high {high}")
    if problems:
        raise ArrivalError(error_code("S2", "LGCP_CONFIG_INVALID"), "arrival_lgcp_config_5B: " + "; ".join(problems),
                           policy="arrival_lgcp_config_5B")
    return policy


def group_parameters(grouping: pl.DataFrame, policy: LgcpPolicy) -> pl.DataFrame:
    """One row per group, sorted by group_id: its strata, σ, length scale L (buckets) and φ = exp(-1/L)."""
    groups = grouping.group_by("group_id").agg(
        *[pl.col(c).first() for c in _STRATA], pl.len().alias("members"),
        pl.max_horizontal([pl.col(c).n_unique() for c in _STRATA]).alias("_strata_seen"),
    ).sort("group_id")
    mixed = groups.filter(pl.col("_strata_seen") > 1)
    if mixed.height:
        raise ArrivalError(error_code("S2", "DOMAIN_ALIGN_FAILED"),
                           f"s1_grouping_5B: group {mixed['group_id'][0]!r} mixes strata of {list(_STRATA)}",
                           group_id=mixed["group_id"][0])
    try:
        params = groups.drop("_strata_seen").with_columns(
            policy.sigma.expr().alias("sigma"),
            policy.length.expr().alias("length_scale_buckets"),
        ).with_columns((-1.0 / pl.col("length_scale_buckets")).exp().alias("phi"))
    except pl.exceptions.InvalidOperationError as exc:  # a stratum value the policy has no multiplier for
        raise ArrivalError(error_code("S2", "LGCP_CONFIG_INVALID"),
                           f"arrival_lgcp_config_5B has no multiplier for a stratum of s1_grouping_5B: {exc}",
                           policy="arrival_lgcp_config_5B") from exc
    return params


@dataclass(frozen=True)
class LatentField:
    """Per-group latent values Z (G×H), factors ξ, clipping flags and the RNG event envelope of each group."""

    group_id: tuple[str, ...]
    sigma: np.ndarray
    length_scale: np.ndarray
    latent: np.ndarray
    factor: np.ndarray
    clipped: np.ndarray
    rng_key: np.ndarray
    counter_before: tuple[np.ndarray, np.ndarray]  # (hi, lo) of block 0
    counter_after: tuple[np.ndarray, np.ndarray]  # (hi, lo) one past the last block
    event_blocks: np.ndarray | None = None  # blocks of each event (stationary: 2M); None: H each
    embedding_sizes: np.ndarray | None = None  # stationary only: M of each group
    largest_clipped: float | None = None  # stationary only: the largest |λ| set to 0 over the embeddings
    largest_clipped_ratio: float | None = None  # ... and its largest ratio to its embedding's max λ

    @property
    def buckets(self) -> int:
        return self.latent.shape[1]

    @property
    def events(self) -> int:
        return len(self.rng_key)

    @property
    def blocks(self) -> np.ndarray:
        """Philox blocks of each event (int64): H (OU, iid) or 2M (stationary)."""
        if self.event_blocks is not None:
            return self.event_blocks
        return np.full(self.events, self.buckets, dtype=np.int64)

    @property
    def draws(self) -> np.ndarray:
        """Draws of each event (int64): two 64-bit words per block, so 2H or 4M."""
        return 2 * self.blocks

    def embedding_metrics(self) -> dict:
        """Run-report metrics of the stationary embeddings ({} for the other models)."""
        if self.embedding_sizes is None:
            return {}
        return {"latent_embedding_sizes": sorted({int(m) for m in self.embedding_sizes}),
                "latent_embedding_largest_clipped": self.largest_clipped,
                "latent_embedding_largest_clipped_ratio": self.largest_clipped_ratio}


def latent_normals(key: np.ndarray, hi: np.ndarray, lo: np.ndarray, buckets: int) -> np.ndarray:
    """Standard normals (G×H): block j of each group's stream gives z_j by Box–Muller (cosine) of (x0, x1)."""
    out = np.empty((len(key), buckets), dtype=np.float64)

    def fill(g0: int, g1: int) -> None:
        offsets = np.tile(np.arange(buckets, dtype=np.uint64), g1 - g0)
        x0, x1 = streams.blocks(np.repeat(key[g0:g1], buckets), np.repeat(hi[g0:g1], buckets),
                                np.repeat(lo[g0:g1], buckets), offsets)
        out[g0:g1] = variates.box_muller(x0, x1).reshape(g1 - g0, buckets)

    parallel.over_ranges(len(key), _group_batch(buckets), fill)  # each group's rows from its own stream only
    return out


def _group_batch(width: int) -> int:
    """Groups drawn at once: about `_BATCH_NORMALS` values (bounds the memory, never a value)."""
    return max(1, _BATCH_NORMALS // max(1, width))


def latent_gaussian(model_id: str, sigma: np.ndarray, phi: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Z (G×H): OU/AR(1) `Z_0 = σ z_0, Z_t = φ Z_{t-1} + σ √(1-φ²) z_t`, or iid `Z_t = σ z_t`."""
    sigma = sigma[:, None]
    if model_id == "log_gaussian_iid_v1":
        return sigma * normals
    innovation = sigma * np.sqrt(1.0 - phi * phi)[:, None] * normals
    latent = np.empty_like(normals)
    latent[:, 0] = sigma[:, 0] * normals[:, 0]
    for t in range(1, normals.shape[1]):  # over buckets; the body is a vector over groups
        latent[:, t] = phi * latent[:, t - 1] + innovation[:, t]
    return latent


def domain_keys(group_ids: Sequence[str], *, coupled: bool = False) -> list[str]:
    """The S2 stream domain keys: `group_id=<g>`, or under coupling `common_v1` `coupled_group=<g without its band>`."""
    if coupled:
        template = ledger.COUPLED_DOMAIN_KEYS[FAMILY_ID]
        return [template.format(coupled_group=ledger.coupled_group(g)) for g in group_ids]
    return [f"group_id={g}" for g in group_ids]


@functools.lru_cache(maxsize=512)
def _embedding(kernel_id: str, length: float, buckets: int, settings: StationarySettings,
               min_size: int | None = None) -> kernels.Embedding:
    """One (kernel, L, H) embedding under the policy's settings (at M ≥ min_size when coupled), computed once per
    process (read-only arrays)."""
    return kernels.embed(kernel_id, length, buckets, tolerance=settings.embedding_tolerance,
                         max_factor=settings.max_embedding_factor, period_buckets=settings.period_buckets,
                         periodic_length=settings.periodic_length, min_size=min_size)


@functools.lru_cache(maxsize=512)
def _coupled_size(kernel_id: str, lengths: tuple[float, ...], buckets: int, settings: StationarySettings) -> int:
    """M_c of a coupled group whose scenario bands give these length scales (`kernels.coupled_size`)."""
    return kernels.coupled_size(kernel_id, lengths, buckets, tolerance=settings.embedding_tolerance,
                                max_factor=settings.max_embedding_factor, period_buckets=settings.period_buckets,
                                periodic_length=settings.periodic_length)


def band_lengths(demand_class: str, policy: LgcpPolicy) -> tuple[float, ...]:
    """L of a demand class under every scenario band of the policy (band-name order): the length scales a coupled
    group takes across its scenarios, `clamp(L_base[band] · mL_demand[class], L_low, L_high)` as in S2."""
    bands = sorted(policy.length.base)
    frame = pl.DataFrame({"scenario_band": bands, "demand_class": [demand_class] * len(bands)})
    return tuple(frame.select(policy.length.expr())[:, 0].to_list())


def coupled_sizes(params: pl.DataFrame, policy: LgcpPolicy, buckets: int) -> np.ndarray:
    """M_c of every group (int64, params order) under scenario coupling `common_v1`: the first M of the doubling
    sequence at which every band's L of the group's demand class embeds (laws §10), so coupled scenarios share
    their 2M_c normals whatever their L."""
    classes = params["demand_class"].to_list()
    by_class = {}
    for name in sorted(set(classes)):  # over demand classes (a handful), not groups
        try:
            by_class[name] = _coupled_size(policy.kernel_id, band_lengths(name, policy), int(buckets),
                                           policy.stationary)
        except kernels.KernelEmbeddingError as exc:
            group = params["group_id"][classes.index(name)]
            raise _construction_failed(group, exc) from exc
    return np.array([by_class[name] for name in classes], dtype=np.int64)


def _construction_failed(group: str, exc: kernels.KernelEmbeddingError) -> ArrivalError:
    """`5B.S2.KERNEL_CONSTRUCTION_FAILED` for a group whose kernel has no embedding up to the largest M."""
    return ArrivalError(
        error_code("S2", "KERNEL_CONSTRUCTION_FAILED"),
        f"group {group!r}: kernel {exc.kernel_id} with L={exc.length_scale!r} buckets over H={exc.buckets} "
        f"buckets has no non-negative circulant embedding up to M={exc.size} (max_embedding_factor "
        f"{exc.max_factor!r}): negative eigenvalue mass Σ|λ<0| / Σ|λ| = {exc.negative_mass:.3e}, "
        f"min λ / max λ = {exc.min_ratio:.3e} < −embedding_tolerance {-exc.tolerance:.3e}",
        policy="arrival_lgcp_config_5B", group_id=group, kernel_id=exc.kernel_id,
        length_scale_buckets=exc.length_scale, buckets=exc.buckets, embedding_size=exc.size,
        negative_mass=exc.negative_mass)


def group_embeddings(params: pl.DataFrame, policy: LgcpPolicy, buckets: int, *,
                     coupled: bool = False) -> kernels.GroupEmbeddings:
    """The circulant embedding of every group (one per distinct L, or per distinct (L, M_c) under `coupled`); a
    kernel that cannot be embedded at the largest allowed size is `5B.S2.KERNEL_CONSTRUCTION_FAILED`, naming the
    first group with that L."""
    lengths = params["length_scale_buckets"].to_numpy().astype(np.float64)
    sizes = coupled_sizes(params, policy, buckets) if coupled else np.zeros(len(lengths), dtype=np.int64)
    pairs = np.stack([lengths, sizes.astype(np.float64)], axis=1).reshape(-1, 2)
    distinct, index = np.unique(pairs, axis=0, return_inverse=True)
    embeddings = []
    for i, (value, size) in enumerate(distinct.tolist()):  # over distinct length scales (strata), not groups
        try:
            embeddings.append(_embedding(policy.kernel_id, value, int(buckets), policy.stationary,
                                         int(size) if coupled else None))
        except kernels.KernelEmbeddingError as exc:
            group = params["group_id"][int(np.argmax(index.reshape(-1) == i))]
            raise _construction_failed(group, exc) from exc
    index = index.astype(np.int64).reshape(-1)
    return kernels.GroupEmbeddings(tuple(embeddings), index)


def event_blocks(params: pl.DataFrame, policy: LgcpPolicy, buckets: int, *, coupled: bool = False) -> np.ndarray:
    """Blocks of each group's one RNG event (int64, params order): H for OU and iid, 2M for stationary (2M_c under
    `coupled`), and no events at all (an empty array) under `none`. Draws are twice the blocks."""
    if policy.latent_model_id == "none":
        return np.zeros(0, dtype=np.int64)
    if policy.latent_model_id == STATIONARY:
        return 2 * group_embeddings(params, policy, buckets, coupled=coupled).sizes
    return np.full(params.height, buckets, dtype=np.int64)


def stationary_fields(groups: kernels.GroupEmbeddings, key: np.ndarray, hi: np.ndarray,
                      lo: np.ndarray) -> np.ndarray:
    """Unit-σ fields (G×H): group g's blocks 0..M−1 give z1 and M..2M−1 give z2 (Box–Muller, cosine), and its
    field is Re(FFT(√(λ/M) ⊙ (z1 + i·z2)))[0:H]. Drawn per distinct embedding in batches of groups; every value
    depends only on its own group's stream."""
    out = np.empty((groups.index.shape[0], groups.buckets), dtype=np.float64)
    for i, emb in enumerate(groups.embeddings):  # over distinct embeddings, not groups
        rows = np.flatnonzero(groups.index == i)
        width = 2 * emb.size
        offsets = np.arange(width, dtype=np.uint64)

        def fill(start: int, stop: int, rows: np.ndarray = rows, width: int = width, offsets: np.ndarray = offsets,
                 emb: kernels.Embedding = emb) -> None:
            part = rows[start:stop]
            x0, x1 = streams.blocks(np.repeat(key[part], width), np.repeat(hi[part], width),
                                    np.repeat(lo[part], width), np.tile(offsets, part.shape[0]))
            z = variates.box_muller(x0, x1).reshape(part.shape[0], width)
            out[part] = kernels.circulant_field(emb.sqrt_scaled, z[:, :emb.size], z[:, emb.size:], emb.buckets)

        parallel.over_ranges(rows.shape[0], _group_batch(width), fill)
    return out


def sample_latent(
    params: pl.DataFrame,
    policy: LgcpPolicy,
    buckets: int,
    *,
    manifest_fingerprint: str,
    parameter_hash: str,
    seed: int,
    scenario_id: str,
    domain_sep: str = streams.DOMAIN_SEP,
    coupled: bool = False,
) -> LatentField:
    """Draw every group's field over the H buckets (under `none`: Z ≡ 0, σ = 0, ξ ≡ 1 and no RNG event).

    `coupled` (scenario coupling `common_v1`): streams derived with `*` for the scenario and the coupled domain
    key, and stationary fields embedded at the coupled size M_c, so corresponding groups of every scenario share
    their normals, block for block, whatever their L.
    """
    group_ids = tuple(params["group_id"].to_list())
    length = params["length_scale_buckets"].to_numpy()
    groups = len(group_ids)
    if policy.latent_model_id == "none":
        empty = np.zeros(0, dtype=np.uint64)
        return LatentField(group_ids, np.zeros(groups), length, np.zeros((groups, buckets)),
                           np.ones((groups, buckets)), np.zeros((groups, buckets), dtype=bool),
                           empty, (empty, empty), (empty, empty))
    sigma = params["sigma"].to_numpy()
    embedded = (group_embeddings(params, policy, buckets, coupled=coupled) if policy.latent_model_id == STATIONARY
                else None)
    key, hi, lo = streams.stream_bases(FAMILY_ID, manifest_fingerprint, parameter_hash, seed, scenario_id,
                                       domain_keys(group_ids, coupled=coupled), domain_sep=domain_sep,
                                       coupled=coupled)
    if embedded is None:
        after_hi, after_lo = _counter_after(hi, lo, buckets, group_ids)
        latent = latent_gaussian(policy.latent_model_id, sigma, params["phi"].to_numpy(),
                                 latent_normals(key, hi, lo, buckets))
        extra = {}
    else:
        blocks = 2 * embedded.sizes
        after_hi, after_lo = _counter_after(hi, lo, blocks.astype(np.uint64), group_ids)
        latent = sigma[:, None] * stationary_fields(embedded, key, hi, lo)
        extra = {"event_blocks": blocks, "embedding_sizes": embedded.sizes,
                 "largest_clipped": max((e.largest_clipped for e in embedded.embeddings), default=0.0),
                 "largest_clipped_ratio": max((e.largest_clipped / float(e.eigenvalues.max())
                                               for e in embedded.embeddings), default=0.0)}
    raw = _unclipped_factors(latent, sigma)
    factor = np.clip(raw, policy.min_factor, policy.max_factor)
    return LatentField(group_ids, sigma, length, latent, factor, factor != raw, key, (hi, lo), (after_hi, after_lo),
                       **extra)


def _unclipped_factors(latent: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return variates.exp(latent - 0.5 * (sigma * sigma)[:, None])


def latent_factors(latent: np.ndarray, sigma: np.ndarray, policy: LgcpPolicy) -> np.ndarray:
    """ξ = clip(exp(Z − σ²/2), min_factor, max_factor): mean one before clipping."""
    return np.clip(_unclipped_factors(latent, sigma), policy.min_factor, policy.max_factor)


def _counter_after(hi: np.ndarray, lo: np.ndarray, blocks: int | np.ndarray,
                   group_ids: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """base + blocks (one count, or one per group) with carry; a 128-bit wrap anywhere in a stream is an accounting
    failure (abort_on_wrap)."""
    after_lo = lo + np.asarray(blocks, dtype=np.uint64)
    carry = after_lo < lo
    wrapped = carry & (hi == np.uint64(2**64 - 1))
    if wrapped.any():
        g = group_ids[int(np.argmax(wrapped))]
        raise ArrivalError(error_code("S2", "RNG_ACCOUNTING_MISMATCH"),
                           f"the latent stream of group {g!r} wraps the 128-bit Philox counter", group_id=g)
    return hi + carry.astype(np.uint64), after_lo


def realise(lambda_target: np.ndarray, entity_group: np.ndarray, field: LatentField,
            lambda_max: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Return (ξ, λ_realised) for whole entities in bucket order: row e·H + t takes ξ[group(e), t]."""
    factor = field.factor[entity_group].ravel()
    realised = lambda_target * factor
    if lambda_max is not None:
        np.minimum(realised, lambda_max, out=realised)
    return factor, realised
