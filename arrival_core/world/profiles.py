"""World profiles: `config/worlds/<profile>.yaml` with its zone and shape catalogues, as frozen specs."""
from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from .. import contracts
from ..encoding import load_yaml
from ..errors import ArrivalError, error_code
from .shapes import Shapes, load_shapes
from .zones import Zones, load_zones

WORLDS_DIR = "worlds"
PROFILE_SCHEMA_REF = "schemas.world.yaml#"
CHANNELS = ("card_present", "card_not_present")
VIRTUAL_MODES = ("NON_VIRTUAL", "HYBRID", "VIRTUAL_ONLY")
_SHARE_TOLERANCE = 1e-9


def invalid(where: Path | str, message: str, **context: Any) -> ArrivalError:
    """Return the error for a profile or catalogue that cannot be used, naming its file."""
    return ArrivalError(error_code("WORLD", "PROFILE_INVALID"), f"{where}: {message}", file=str(where), **context)


@dataclass(frozen=True)
class Horizon:
    """The UTC horizon every scenario of the world shares, cut into equal buckets."""

    start: datetime
    days: int
    bucket_seconds: int

    @property
    def buckets(self) -> int:
        return self.days * 86400 // self.bucket_seconds

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)


@dataclass(frozen=True)
class Surge:
    """A window where λ is the baseline times `multiplier` (for the listed classes, or all)."""

    start: datetime
    end: datetime
    multiplier: float
    demand_classes: tuple[str, ...] | None


@dataclass(frozen=True)
class ScenarioSpec:
    """One scenario row of the manifest plus the surge windows that shape its λ."""

    scenario_id: str
    scenario_version: str
    is_baseline: bool
    is_stress: bool
    labels: tuple[str, ...]
    surges: tuple[Surge, ...]


@dataclass(frozen=True)
class DemandClassSpec:
    """How merchants of one demand class are drawn: their share, channels and virtual modes."""

    name: str
    share: float
    channels: tuple[float, float, float]  # card_present only, card_not_present only, both
    card_present_share: float
    hybrid: float
    virtual_only: float


@dataclass(frozen=True)
class PopulationSpec:
    """The merchant population law: size distribution, classes, zones per merchant and channels."""

    median_weekly: float
    sigma: float
    classes: tuple[DemandClassSpec, ...]
    virtual_only_channels: tuple[float, float, float]
    virtual_only_card_present_share: float
    zone_tiers: tuple[tuple[float, int, int], ...]  # (from_quantile, min, max)
    both_channels_from_quantile: float
    home_zone_weight: float


@dataclass(frozen=True)
class Profile:
    """A validated profile with its catalogues; `content` is everything the world depends on (hashed)."""

    name: str
    description: str
    world_seed: int
    entities: int
    horizon: Horizon
    zones: Zones
    shapes: Shapes
    population: PopulationSpec
    scenarios: tuple[ScenarioSpec, ...]
    content: Mapping[str, Any]


def worlds_dir(config_dir: Path = contracts.DEFAULT_CONFIG_DIR) -> Path:
    """Return the folder of the world profiles and their catalogues."""
    return Path(config_dir) / WORLDS_DIR


def available_profiles(config_dir: Path = contracts.DEFAULT_CONFIG_DIR) -> tuple[str, ...]:
    """Return the names of the profiles in config/worlds (files whose `profile` field equals their stem)."""
    names = []
    for path in sorted(worlds_dir(config_dir).glob("*.yaml")):
        doc = _read_yaml(path)
        if isinstance(doc, dict) and doc.get("profile") == path.stem:
            names.append(path.stem)
    return tuple(names)


def load_profile(name: str, config_dir: Path = contracts.DEFAULT_CONFIG_DIR) -> Profile:
    """Load, validate and resolve a profile by name; PROFILE_INVALID names the file and field at fault."""
    folder = worlds_dir(config_dir)
    if name not in available_profiles(config_dir):
        known = ", ".join(available_profiles(config_dir))
        raise invalid(folder / f"{name}.yaml", f"no profile {name!r}; available: {known}")
    path = folder / f"{name}.yaml"
    doc = _read_yaml(path)
    contracts.validate_document(doc, PROFILE_SCHEMA_REF, code=error_code("WORLD", "PROFILE_INVALID"), where=str(path))
    classes = demand_class_names()
    zones, zones_doc = load_zones(folder / doc["zones"]["catalogue"], doc["zones"].get("countries"),
                                  doc["zones"].get("tzids"))
    shapes, shapes_doc = load_shapes(folder / doc["shapes"], classes)
    horizon = _horizon(doc["horizon"], path)
    return Profile(
        name=name,
        description=doc["description"],
        world_seed=int(doc["world_seed"]),
        entities=int(doc["entities"]),
        horizon=horizon,
        zones=zones,
        shapes=shapes,
        population=_population(doc["merchants"], path, classes),
        scenarios=_scenarios(doc["scenarios"], horizon, path),
        content={"profile": doc, "zones": zones_doc, "shapes": shapes_doc},
    )


def demand_class_names() -> tuple[str, ...]:
    """Return the demand classes in their contract order (the enum of schemas.layer1.yaml)."""
    return tuple(contracts.load_schema("schemas.layer1.yaml#/$defs/demand_class")["enum"])


def _read_yaml(path: Path) -> Any:
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise invalid(path, f"cannot be read: {exc}") from exc


def parse_instant(text: str) -> datetime:
    """Parse a profile instant (`YYYY-MM-DDTHH:MM:00Z`) as an aware UTC datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _aligned(instant: datetime, bucket_seconds: int) -> bool:
    return int(instant.timestamp()) % bucket_seconds == 0


def _horizon(raw: Mapping[str, Any], path: Path) -> Horizon:
    horizon = Horizon(parse_instant(raw["start_utc"]), int(raw["days"]), int(raw["bucket_seconds"]))
    if not _aligned(horizon.start, horizon.bucket_seconds):
        raise invalid(path, f"horizon.start_utc {raw['start_utc']} is not on a bucket boundary")
    return horizon


def _mix(raw: Mapping[str, float], path: Path, where: str) -> tuple[float, float, float]:
    mix = (float(raw["card_present"]), float(raw["card_not_present"]), float(raw["both"]))
    if not math.isclose(sum(mix), 1.0, abs_tol=_SHARE_TOLERANCE):
        raise invalid(path, f"{where}: channel probabilities sum to {sum(mix)}, not 1")
    return mix


def _population(raw: Mapping[str, Any], path: Path, class_order: tuple[str, ...]) -> PopulationSpec:
    classes = []
    for name in class_order:  # contract order, so class indices never depend on YAML key order
        if name not in raw["demand_classes"]:
            continue
        spec = raw["demand_classes"][name]
        where = f"merchants.demand_classes.{name}"
        hybrid, virtual_only = float(spec["virtual"]["HYBRID"]), float(spec["virtual"]["VIRTUAL_ONLY"])
        if hybrid + virtual_only > 1.0 + _SHARE_TOLERANCE:
            raise invalid(path, f"{where}.virtual: HYBRID + VIRTUAL_ONLY exceeds 1")
        classes.append(DemandClassSpec(name, float(spec["share"]), _mix(spec["channels"], path, where),
                                       float(spec["card_present_share"]), hybrid, virtual_only))
    tiers = tuple((float(t["from_quantile"]), int(t["min"]), int(t["max"]))
                  for t in raw["zones_per_merchant"])
    starts = [t[0] for t in tiers]
    if starts[0] != 0.0 or any(b <= a for a, b in itertools.pairwise(starts)):
        raise invalid(path, "merchants.zones_per_merchant: from_quantile must start at 0 and increase")
    if any(lo > hi for _, lo, hi in tiers):
        raise invalid(path, "merchants.zones_per_merchant: a tier has min > max")
    return PopulationSpec(
        median_weekly=float(raw["weekly_arrivals"]["median"]),
        sigma=float(raw["weekly_arrivals"]["sigma"]),
        classes=tuple(classes),
        virtual_only_channels=_mix(raw["virtual_only_channels"], path, "merchants.virtual_only_channels"),
        virtual_only_card_present_share=float(raw["virtual_only_card_present_share"]),
        zone_tiers=tiers,
        both_channels_from_quantile=float(raw["both_channels_from_quantile"]),
        home_zone_weight=float(raw["home_zone_weight"]),
    )


def _scenarios(raw: list[Mapping[str, Any]], horizon: Horizon, path: Path) -> tuple[ScenarioSpec, ...]:
    out = []
    for i, spec in enumerate(raw):
        surges = []
        for j, window in enumerate(spec.get("surges") or ()):
            where = f"scenarios[{i}].surges[{j}]"
            start, end = parse_instant(window["start_utc"]), parse_instant(window["end_utc"])
            if not (horizon.start <= start < end <= horizon.end):
                raise invalid(path, f"{where}: window must be non-empty and inside the horizon")
            if not (_aligned(start, horizon.bucket_seconds) and _aligned(end, horizon.bucket_seconds)):
                raise invalid(path, f"{where}: window is not on {horizon.bucket_seconds} s bucket boundaries")
            classes = window.get("demand_classes")
            surges.append(Surge(start, end, float(window["multiplier"]), tuple(classes) if classes else None))
        out.append(ScenarioSpec(spec["scenario_id"], spec["scenario_version"], bool(spec["is_baseline"]),
                                bool(spec["is_stress"]), tuple(spec["labels"]), tuple(surges)))
    ids = [s.scenario_id for s in out]
    if len(set(ids)) != len(ids):
        raise invalid(path, f"scenarios: duplicate scenario_id in {ids}")
    return tuple(out)
