"""The merchant population: heavy-tailed sizes, demand classes, virtual modes, zones and channels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from ..rng import variates
from .profiles import CHANNELS, VIRTUAL_MODES, PopulationSpec
from .seeding import generator, mix64
from .zones import Zones

ENTITY_KEY = ("merchant_id", "legal_country_iso", "tzid", "channel_group")


@dataclass(frozen=True)
class Population:
    """The world's entities (one row per merchant × zone × channel, writer-sorted) and its merchants."""

    entities: pl.DataFrame  # ENTITY_KEY, demand_class, zone, class_index, weekly
    merchants: pl.DataFrame  # merchant_id, demand_class, virtual_mode (sorted by merchant_id)


def draw_population(spec: PopulationSpec, zones: Zones, n_entities: int, world_key: str) -> Population:
    """Draw merchants until exactly `n_entities` entities exist (the last one may lose trailing entities)."""
    m = n_entities  # every merchant has at least one entity, so this many candidates always suffice
    size = spec.median_weekly * variates.exp(spec.sigma * generator(world_key, "merchant.size").standard_normal(m))
    quantile = np.argsort(np.argsort(size, kind="stable"), kind="stable") / m
    cls = _draw_classes(spec, m, world_key)
    mode = _draw_virtual_modes(spec, cls, world_key)
    zone, share, count = _draw_zones(spec, zones, quantile, world_key)
    channel_choice, cp_share = _draw_channels(spec, cls, mode, quantile, world_key)

    # Expand (merchant, zone rank) pairs, then channels, in merchant-major order; keep the first n_entities.
    pair_m, pair_rank = np.nonzero(np.arange(zone.shape[1])[None, :] < count[:, None])
    n_channels = np.where(channel_choice[pair_m] == 2, 2, 1)
    ent_pair = np.repeat(np.arange(pair_m.size), n_channels)[:n_entities]
    first_of_pair = np.concatenate(([0], np.cumsum(n_channels)[:-1]))
    position = np.arange(ent_pair.size) - first_of_pair[ent_pair]
    ent_m = pair_m[ent_pair]
    choice = channel_choice[ent_m]
    channel = np.where(choice == 2, position, choice)  # 0 card_present, 1 card_not_present
    channel_share = np.where(choice == 2, np.where(channel == 0, cp_share[ent_m], 1.0 - cp_share[ent_m]), 1.0)
    weekly = size[ent_m] * share[ent_m, pair_rank[ent_pair]] * channel_share
    ent_zone = zone[ent_m, pair_rank[ent_pair]]

    offset = generator(world_key, "merchant.id").integers(0, 1 << 64, dtype=np.uint64, endpoint=False)
    ids = mix64(np.arange(m, dtype=np.uint64) + np.full(m, offset, dtype=np.uint64))
    class_names = np.asarray([c.name for c in spec.classes])
    entities = pl.DataFrame({
        "merchant_id": pl.Series(ids[ent_m], dtype=pl.UInt64),
        "legal_country_iso": np.asarray(zones.countries)[ent_zone],
        "tzid": np.asarray(zones.tzids)[ent_zone],
        "channel_group": np.asarray(CHANNELS)[channel],
        "demand_class": class_names[cls[ent_m]],
        "zone": ent_zone.astype(np.int32),
        "class_index": cls[ent_m].astype(np.int8),
        "weekly": weekly,
    }).sort(list(ENTITY_KEY))
    used = np.unique(ent_m)
    merchants = pl.DataFrame({
        "merchant_id": pl.Series(ids[used], dtype=pl.UInt64),
        "demand_class": class_names[cls[used]],
        "virtual_mode": np.asarray(VIRTUAL_MODES)[mode[used]],
    }).sort("merchant_id")
    return Population(entities, merchants)


def _draw_classes(spec: PopulationSpec, m: int, world_key: str) -> np.ndarray:
    shares = np.asarray([c.share for c in spec.classes])
    edges = np.cumsum(shares / shares.sum())[:-1]
    return np.searchsorted(edges, generator(world_key, "merchant.class").random(m), side="right")


def _draw_virtual_modes(spec: PopulationSpec, cls: np.ndarray, world_key: str) -> np.ndarray:
    """Return 0 NON_VIRTUAL, 1 HYBRID, 2 VIRTUAL_ONLY per merchant (independent of any 5B seed)."""
    p_virtual = np.asarray([c.virtual_only for c in spec.classes])[cls]
    p_hybrid = np.asarray([c.hybrid for c in spec.classes])[cls]
    u = generator(world_key, "merchant.virtual").random(cls.size)
    return np.where(u < p_virtual, 2, np.where(u < p_virtual + p_hybrid, 1, 0))


def _draw_zones(
    spec: PopulationSpec, zones: Zones, quantile: np.ndarray, world_key: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return each merchant's zones (home first, by weight, no repeats), volume shares and zone count."""
    m = quantile.size
    rng = generator(world_key, "merchant.zones")
    starts = np.asarray([t[0] for t in spec.zone_tiers])
    lo = np.asarray([t[1] for t in spec.zone_tiers])
    hi = np.asarray([t[2] for t in spec.zone_tiers])
    tier = np.searchsorted(starts, quantile, side="right") - 1
    drawn = lo[tier] + np.floor(rng.random(m) * (hi[tier] - lo[tier] + 1)).astype(np.int64)
    count = np.minimum(drawn, len(zones))
    weights = np.asarray(zones.weights)
    # Gumbel top-k: the k largest keys are a weighted draw of k zones without replacement.
    keys = np.log(weights)[None, :] + rng.gumbel(size=(m, len(zones)))
    width = int(count.max())
    zone = np.argsort(-keys, axis=1, kind="stable")[:, :width]
    raw = rng.exponential(size=(m, width)) * weights[zone]
    raw[:, 0] *= spec.home_zone_weight
    raw[np.arange(width)[None, :] >= count[:, None]] = 0.0
    return zone, raw / raw.sum(axis=1, keepdims=True), count


def _draw_channels(
    spec: PopulationSpec, cls: np.ndarray, mode: np.ndarray, quantile: np.ndarray, world_key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Return 0 card_present only, 1 card_not_present only or 2 both, and the card_present volume share."""
    mixes = np.asarray([c.channels for c in spec.classes])[cls]
    virtual_only = mode == 2
    mixes[virtual_only] = spec.virtual_only_channels
    edges = np.cumsum(mixes, axis=1)
    u = generator(world_key, "merchant.channels").random(cls.size)
    choice = (u >= edges[:, 0]).astype(np.int64) + (u >= edges[:, 1])
    choice[(quantile >= spec.both_channels_from_quantile) & ~virtual_only] = 2
    cp_share = np.where(virtual_only, spec.virtual_only_card_present_share,
                        np.asarray([c.card_present_share for c in spec.classes])[cls])
    return choice, cp_share
