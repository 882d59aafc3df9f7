"""Readers and independent re-implementations (HashGate §3.1, grouping law §6, local clocks) for tests."""
from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import yaml

from arrival_core import contracts
from arrival_core.store import Store
from arrival_core.world import WorldInfo

LAYER1 = ("1A", "1B", "2A", "2B", "3A", "3B")
SEGMENTS = LAYER1 + ("5A",)
ENTITY = ["merchant_id", "legal_country_iso", "tzid", "channel_group"]


def store(world: WorldInfo) -> Store:
    return Store(run_root=world.root)


def path(world: WorldInfo, dataset_id: str, **tokens: object) -> Path:
    return store(world).path(dataset_id, manifest_fingerprint=world.manifest_fingerprint, **tokens)


def read(world: WorldInfo, dataset_id: str, **tokens: object) -> pl.DataFrame:
    return pl.read_parquet(path(world, dataset_id, **tokens))


def surface(world: WorldInfo, scenario_id: str) -> pl.DataFrame:
    return read(world, "merchant_zone_scenario_local_5A", scenario_id=scenario_id)


def files(root: Path) -> dict[str, bytes]:
    """Every file under a root as {relative posix path: bytes}."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def bundle_problem(world: WorldInfo, segment: str) -> str | None:
    """Re-check one bundle exactly as DESIGN §3.1 states it; return what is wrong, or None if it PASSes."""
    entry = contracts.dataset(f"validation_bundle_{segment}")
    folder = path(world, entry.id)
    index_path, flag_path = folder / entry.raw["index_file"], folder / entry.raw["flag_file"]
    if not index_path.exists() or not flag_path.exists():
        return f"{segment}: index or flag missing"
    index = json.loads(index_path.read_text())
    try:
        contracts.validate_document(index, entry.schema_ref, code="5B.S0.UPSTREAM_NOT_PASS",
                                    where=str(index_path))
    except Exception as exc:  # noqa: BLE001 - reported as the problem
        return f"{segment}: index invalid: {exc}"
    if index["segment"] != segment or index["manifest_fingerprint"] != world.manifest_fingerprint:
        return f"{segment}: index names {index['segment']}/{index['manifest_fingerprint']}"
    paths = [e["path"] for e in index["entries"]]
    if paths != sorted(paths):
        return f"{segment}: entries not sorted by path"
    concatenated = b""
    for e in index["entries"]:
        member = folder / e["path"]
        if not member.exists():
            return f"{segment}: member {e['path']} missing"
        data = member.read_bytes()
        if hashlib.sha256(data).hexdigest() != e["sha256_hex"]:
            return f"{segment}: member {e['path']} does not match its sha256"
        concatenated += data
    digest = hashlib.sha256(concatenated).hexdigest()
    flag = flag_path.read_text()
    if segment == "5A":
        if json.loads(flag) != {"bundle_digest_sha256": digest}:
            return f"{segment}: JSON flag {flag!r} is not the digest {digest}"
    elif flag.rstrip("\n") != f"sha256_hex = {digest}" or flag.count("\n") > 1:
        return f"{segment}: text flag {flag!r} is not the digest {digest}"
    return None


# ---- the grouping law of DESIGN §6, written independently of arrival_core.grouping ---------------------

def grouping_policy() -> dict:
    return yaml.safe_load((contracts.DEFAULT_CONFIG_DIR / "grouping_policy_5B.yaml").read_text())


def group_ids(domain: pl.DataFrame, band: str, policy: dict) -> pl.Series:
    """group_id per row of a domain with ENTITY, demand_class and virtual_mode columns."""
    zg_n, b_n = policy["zone_group_buckets"], policy["in_stratum_buckets"]
    zone_group = {t: f"zg{hashlib.sha256(b'5B.zone_group|' + t.encode()).digest()[0] % zg_n:02d}"
                  for t in domain["tzid"].unique().to_list()}
    bucket = {m: int.from_bytes(hashlib.sha256(b"5B.group_bucket|" + str(m).encode()).digest()[:8], "big")
              % b_n
              for m in domain["merchant_id"].unique().to_list()}
    vband = policy["virtual_band_map"]
    return pl.Series("group_id", [
        f"{band}|{d}|{c}|{vband[v]}|{zone_group[t]}|b{bucket[m]:02d}"
        for m, t, c, d, v in domain.select(
            "merchant_id", "tzid", "channel_group", "demand_class", "virtual_mode").iter_rows()
    ])


def realism(groups: pl.Series) -> dict:
    """Groups per scenario, median members, largest group share, fraction of groups with 2+ members."""
    sizes = groups.value_counts()["count"]
    return {
        "groups": sizes.len(),
        "median_members": float(sizes.median()),
        "max_group_share": sizes.max() / groups.len(),
        "multi_member_fraction": float((sizes >= 2).mean()),
    }


def meets_targets(metrics: dict, targets: dict) -> list[str]:
    """Return the realism targets a measurement misses (empty when all hold)."""
    lo, hi = targets["groups_per_scenario"]
    misses = []
    if not lo <= metrics["groups"] <= hi:
        misses.append(f"groups {metrics['groups']} outside [{lo}, {hi}]")
    if metrics["median_members"] < targets["min_group_members_median"]:
        misses.append(f"median members {metrics['median_members']}")
    if metrics["max_group_share"] > targets["max_group_share"]:
        misses.append(f"max group share {metrics['max_group_share']:.4f}")
    if metrics["multi_member_fraction"] < targets["min_multi_member_fraction"]:
        misses.append(f"multi-member fraction {metrics['multi_member_fraction']:.3f}")
    return misses


# ---- local clocks from the system zoneinfo database (independent of the generator's Polars conversion) ---

def local_clock(tzids: list[str], start: datetime, buckets: int, bucket_seconds: int = 3600) -> pl.DataFrame:
    """Rows (tzid, bucket_index, utc_hour, local_date, local_hour, local_weekday 1..7, utc_offset_minutes)."""
    rows = []
    for tzid in tzids:
        zone = ZoneInfo(tzid)
        for b in range(buckets):
            utc = start + timedelta(seconds=b * bucket_seconds)
            local = utc.astimezone(zone)
            rows.append((tzid, b, utc.hour, local.date(), local.hour, local.isoweekday(),
                         int(local.utcoffset().total_seconds() // 60)))
    return pl.DataFrame(rows, orient="row", schema={
        "tzid": pl.String, "bucket_index": pl.Int32, "utc_hour": pl.Int32, "local_date": pl.Date,
        "local_hour": pl.Int32, "local_weekday": pl.Int32, "utc_offset_minutes": pl.Int32,
    })


def horizon_start(world: WorldInfo) -> datetime:
    start = read(world, "scenario_manifest_5A")["horizon_start_utc"][0]
    return start.astimezone(UTC)
