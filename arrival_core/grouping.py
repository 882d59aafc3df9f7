"""S1 grouping: stratum features, the zone-group and in-stratum hash laws, group_id, and the realism targets."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from .errors import ArrivalError, error_code

ENTITY_KEYS = ("merchant_id", "legal_country_iso", "tzid", "channel_group")
ZONE_KEYS = ("merchant_id", "legal_country_iso", "tzid")
ZONE_GROUP_PREFIX = b"5B.zone_group|"
GROUP_BUCKET_PREFIX = b"5B.group_bucket|"


@dataclass(frozen=True)
class RealismTargets:
    """Grouping realism targets: enforced at or above `min_entities` entities, reported below."""

    min_entities: int
    groups_per_scenario: tuple[int, int]
    min_group_members_median: float
    max_group_share: float
    min_multi_member_fraction: float


@dataclass(frozen=True)
class GroupingPolicy:
    """The parsed `grouping_policy_5B` (schema-valid already; S0 sealed it)."""

    version: str
    zone_group_buckets: int
    in_stratum_buckets: int
    virtual_band_map: Mapping[str, str]
    realism: RealismTargets


def parse_grouping_policy(doc: Mapping) -> GroupingPolicy:
    """Return the grouping policy as a frozen value; the schema has already pinned mode and stratum fields."""
    targets = doc["realism_targets"]
    low, high = targets["groups_per_scenario"]
    if low > high:
        raise ArrivalError(
            error_code("S1", "POLICY_INVALID"),
            f"grouping_policy_5B.yaml: realism_targets.groups_per_scenario [{low}, {high}] is empty",
            file="grouping_policy_5B.yaml", field="realism_targets.groups_per_scenario",
        )
    return GroupingPolicy(
        version=doc["version"],
        zone_group_buckets=int(doc["zone_group_buckets"]),
        in_stratum_buckets=int(doc["in_stratum_buckets"]),
        virtual_band_map=dict(doc["virtual_band_map"]),
        realism=RealismTargets(
            min_entities=int(targets["min_entities"]),
            groups_per_scenario=(int(low), int(high)),
            min_group_members_median=float(targets["min_group_members_median"]),
            max_group_share=float(targets["max_group_share"]),
            min_multi_member_fraction=float(targets["min_multi_member_fraction"]),
        ),
    )


# ---- SHA-256 over many short messages at once -------------------------------------------------------------------

_K = np.array([
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
], dtype=np.uint32)
_H0 = np.array([0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19],
               dtype=np.uint32)


def _rotr(x: np.ndarray, n: int) -> np.ndarray:
    return (x >> np.uint32(n)) | (x << np.uint32(32 - n))


def _padded_blocks(messages: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Lay out each message with SHA-256 padding in a zero matrix of 64-byte blocks; return (words, block counts)."""
    messages = messages.cast(pa.large_binary())
    n = len(messages)
    offsets = np.frombuffer(messages.buffers()[1], dtype=np.int64)[messages.offset: messages.offset + n + 1]
    data = np.frombuffer(messages.buffers()[2], dtype=np.uint8) if n and offsets[-1] > offsets[0] else \
        np.zeros(0, dtype=np.uint8)
    lengths = np.diff(offsets)
    blocks = (lengths + 8) // 64 + 1  # room for the 0x80 byte and the 8-byte bit length
    width = int(blocks.max(initial=1)) * 64
    padded = np.zeros(n * width, dtype=np.uint8)
    row_start = np.arange(n, dtype=np.int64) * width
    shift = np.repeat(row_start - (offsets[:-1] - offsets[0]), lengths)  # data offset -> flat padded offset
    padded[np.arange(int(lengths.sum()), dtype=np.int64) + shift] = data[offsets[0]: offsets[-1]]
    padded[row_start + lengths] = 0x80
    bit_length = lengths.astype(np.uint64) * np.uint64(8)
    tail = (row_start + blocks * 64 - 8)[:, None] + np.arange(8)
    padded[tail] = ((bit_length[:, None] >> np.arange(56, -8, -8, dtype=np.uint64)) & np.uint64(0xFF)).astype(np.uint8)
    padded = padded.reshape(n, width)
    words = padded.view(">u4").astype(np.uint32).reshape(n, width // 64, 16)
    return words, blocks


def sha256_many(messages: pa.Array) -> np.ndarray:
    """Return the SHA-256 digests of many binary/string messages as an (n, 32) uint8 array, vectorised over n."""
    words, blocks = _padded_blocks(messages)
    n = words.shape[0]
    state = [np.full(n, h0, dtype=np.uint32) for h0 in _H0]
    with np.errstate(over="ignore"):
        for block in range(words.shape[1]):
            w = [np.ascontiguousarray(words[:, block, t]) for t in range(16)]
            for t in range(16, 64):
                x, y = w[t - 15], w[t - 2]
                s0 = _rotr(x, 7) ^ _rotr(x, 18) ^ (x >> np.uint32(3))
                s1 = _rotr(y, 17) ^ _rotr(y, 19) ^ (y >> np.uint32(10))
                w.append(w[t - 16] + s0 + w[t - 7] + s1)
            a, b, c, d, e, f, g, h = state
            for t in range(64):
                t1 = h + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + ((e & f) ^ (~e & g)) + _K[t] + w[t]
                t2 = (_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))
                h, g, f, e, d, c, b, a = g, f, e, d + t1, c, b, a, t1 + t2
            active = blocks > block  # messages with fewer blocks keep their finished state
            state = [np.where(active, s + v, s) for s, v in zip(state, (a, b, c, d, e, f, g, h))]
    return np.stack(state, axis=1).astype(">u4").view(np.uint8).reshape(n, 32)


def _prefixed(prefix: bytes, values: pl.Series) -> pa.Array:
    """The messages prefix ‖ UTF-8 text of each value (integers in decimal), as an Arrow string array."""
    return pl.select(pl.lit(prefix.decode("ascii")) + values.cast(pl.String)).to_series().to_arrow()


# ---- the hash laws (DESIGN §6) -------------------------------------------------------------------------------------

def zone_group_ids(tzids: pl.Series, zone_group_buckets: int) -> pl.Series:
    """Return "zg%02d" % (sha256(b"5B.zone_group|" + tzid)[0] % zone_group_buckets) for each tzid."""
    first_byte = sha256_many(_prefixed(ZONE_GROUP_PREFIX, tzids))[:, 0].astype(np.int64)
    index = pl.Series(first_byte % zone_group_buckets)
    return pl.select(pl.lit("zg") + index.cast(pl.String).str.zfill(2)).to_series().alias("zone_group_id")


def merchant_buckets(merchant_ids: pl.Series, in_stratum_buckets: int) -> pl.Series:
    """Return BE64(sha256(b"5B.group_bucket|" + str(merchant_id))[0:8]) % in_stratum_buckets per merchant."""
    digests = sha256_many(_prefixed(GROUP_BUCKET_PREFIX, merchant_ids))
    head = np.ascontiguousarray(digests[:, :8]).view(">u8").reshape(-1).astype(np.uint64)
    return pl.Series("group_bucket", head % np.uint64(in_stratum_buckets)).cast(pl.Int32)


# ---- grouping ----------------------------------------------------------------------------------------------------

def _first_key(frame: pl.DataFrame, columns: tuple[str, ...]) -> dict:
    row = frame.select(columns).sort(list(columns)).row(0, named=True)
    return {k: row[k] for k in columns}


def attach_features(
    domain: pl.DataFrame,
    profile: pl.DataFrame,
    virtual: pl.DataFrame,
    *,
    policy: GroupingPolicy,
    where_profile: str,
    where_virtual: str,
) -> pl.DataFrame:
    """Join the entity domain to its demand class and virtual band; an entity missing from either is DOMAIN_INVALID."""
    joined = domain.join(profile.select(*ZONE_KEYS, "demand_class"), on=list(ZONE_KEYS), how="left")
    _require_joined(joined, "demand_class", f"no row in merchant_zone_profile_5A ({where_profile})", where_profile)
    band_map = pl.DataFrame(
        {"virtual_mode": list(policy.virtual_band_map), "virtual_band": list(policy.virtual_band_map.values())}
    )
    modes = virtual.select("merchant_id", "virtual_mode").join(band_map, on="virtual_mode", how="left")
    joined = joined.join(modes.select("merchant_id", "virtual_band"), on="merchant_id", how="left")
    _require_joined(joined, "virtual_band", f"no virtual_mode in virtual_classification_3B ({where_virtual})",
                    where_virtual)
    return joined


def _require_joined(joined: pl.DataFrame, column: str, lacking: str, where: str) -> None:
    """DOMAIN_INVALID naming the first entity whose left join found no `column` (what it lacks, in words)."""
    missing = joined.filter(pl.col(column).is_null())
    if missing.height:
        key = _first_key(missing, ENTITY_KEYS)
        raise ArrivalError(error_code("S1", "DOMAIN_INVALID"),
                           f"{missing.height} entit(ies) of the λ surface have {lacking}; first: {key}",
                           file=where, key=key, rows=missing.height)


def assign_groups(features: pl.DataFrame, *, scenario_band: str, policy: GroupingPolicy) -> pl.DataFrame:
    """Add scenario_band, zone_group_id and group_id, hashing each distinct tzid and merchant once, sorted by entity."""
    tzids = features.select("tzid").unique()
    tzids = tzids.with_columns(zone_group_ids(tzids["tzid"], policy.zone_group_buckets))
    merchants = features.select("merchant_id").unique()
    merchants = merchants.with_columns(merchant_buckets(merchants["merchant_id"], policy.in_stratum_buckets))
    out = (
        features.join(tzids, on="tzid", how="left")
        .join(merchants, on="merchant_id", how="left")
        .with_columns(pl.lit(scenario_band).alias("scenario_band"))
        .with_columns(
            pl.concat_str(
                "scenario_band", "demand_class", "channel_group", "virtual_band", "zone_group_id",
                pl.lit("b") + pl.col("group_bucket").cast(pl.String).str.zfill(2),
                separator="|",
            ).alias("group_id")
        )
        .drop("group_bucket")
    )
    return out.sort(list(ENTITY_KEYS))


@dataclass(frozen=True)
class RealismReport:
    """Measured group-size statistics of one scenario and whether the targets were enforced."""

    entity_count: int
    group_count: int
    median_members: float
    max_members: int
    max_group_share: float
    multi_member_fraction: float
    enforced: bool
    violations: tuple[str, ...]

    def metrics(self) -> dict:
        """The report as run-report metrics."""
        return {
            "entity_count": self.entity_count,
            "group_count": self.group_count,
            "median_members_per_group": self.median_members,
            "max_members_per_group": self.max_members,
            "max_group_share": self.max_group_share,
            "multi_member_fraction": self.multi_member_fraction,
            "realism_enforced": self.enforced,
            "realism_violations": list(self.violations),
        }


def measure_realism(grouping: pl.DataFrame, targets: RealismTargets) -> RealismReport:
    """Measure groups, median members, max share and multi-member fraction, and list the targets they miss."""
    sizes = grouping.group_by("group_id").len()["len"]
    n, groups = grouping.height, sizes.len()
    median = float(sizes.median()) if groups else 0.0
    largest = int(sizes.max()) if groups else 0
    share = largest / n if n else 0.0
    multi = float((sizes >= 2).sum() / groups) if groups else 0.0
    low, high = targets.groups_per_scenario
    violations = []
    if not low <= groups <= high:
        violations.append(f"group count {groups} outside groups_per_scenario [{low}, {high}]")
    if median < targets.min_group_members_median:
        violations.append(f"median members {median:g} < min_group_members_median {targets.min_group_members_median:g}")
    if share > targets.max_group_share:
        violations.append(f"largest group share {share:.6g} > max_group_share {targets.max_group_share:g}")
    if multi < targets.min_multi_member_fraction:
        violations.append(
            f"multi-member fraction {multi:.6g} < min_multi_member_fraction {targets.min_multi_member_fraction:g}"
        )
    return RealismReport(n, groups, median, largest, share, multi, n >= targets.min_entities, tuple(violations))


def enforce_realism(report: RealismReport, *, scenario_id: str, where: str) -> None:
    """Raise GROUP_REALISM_FAILED with the measured values when enforced targets are missed."""
    if report.enforced and report.violations:
        raise ArrivalError(
            error_code("S1", "GROUP_REALISM_FAILED"),
            f"{where}: scenario {scenario_id} with {report.entity_count} entities misses its realism targets: "
            + "; ".join(report.violations),
            file=where, scenario_id=scenario_id, **report.metrics(),
        )


# ---- scenario coupling -----------------------------------------------------------------------------------------

def check_coupled_scenarios(manifest: pl.DataFrame, bucket_duration_seconds: int) -> None:
    """Under scenario coupling `common_v1`, every scenario of the manifest must share the horizon start and the
    number of buckets of `bucket_duration_seconds` (the one duration of the time-grid policy), so that block j of
    a coupled stream is the same bucket in every scenario (laws §10); otherwise `5B.S1.HORIZON_MISALIGNED` naming
    the scenarios that differ from the first (in scenario_id order) and their horizons."""
    step = int(bucket_duration_seconds) * 1_000_000
    if step <= 0:
        raise ValueError(f"check_coupled_scenarios: bucket_duration_seconds {bucket_duration_seconds!r} must be > 0")
    horizons = manifest.select(
        pl.col("scenario_id"),
        pl.col("horizon_start_utc").dt.epoch("us").alias("start_us"),
        pl.col("horizon_end_utc").dt.epoch("us").alias("end_us"),
        pl.col("horizon_start_utc").cast(pl.String).alias("start"),
    ).with_columns(((pl.col("end_us") - pl.col("start_us")) // step).alias("buckets")).sort("scenario_id")
    if horizons.height < 2:
        return
    first = horizons.row(0, named=True)
    other = horizons.filter((pl.col("start_us") != first["start_us"]) | (pl.col("buckets") != first["buckets"]))
    if other.height:
        named = pl.concat([horizons.head(1), other]).select(
            pl.format("{} starts {} with {} buckets", "scenario_id", "start", "buckets"))
        described = "; ".join(named.to_series().to_list())
        raise ArrivalError(
            error_code("S1", "HORIZON_MISALIGNED"),
            f"scenario coupling common_v1 needs one horizon start and bucket count "
            f"({bucket_duration_seconds}-second buckets) for every scenario: {described}",
            scenarios=[first["scenario_id"], *other["scenario_id"].to_list()],
            bucket_duration_seconds=int(bucket_duration_seconds),
        )
