"""Weekly demand shapes: a (class, local weekday*24 + hour) table of weights summing to 1 per class."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..encoding import load_yaml
from ..errors import ArrivalError, error_code

SLOTS_PER_WEEK = 168


@dataclass(frozen=True)
class Shapes:
    """Normalised weekly weights: `weights[c][slot]` for class `classes[c]`; a zero is a closed hour."""

    classes: tuple[str, ...]
    weights: tuple[tuple[float, ...], ...]

    def table(self) -> np.ndarray:
        """Return the weights as a (classes, 168) float64 array."""
        return np.asarray(self.weights, dtype=np.float64).reshape(len(self.classes), SLOTS_PER_WEEK)

    def peak_hour(self, demand_class: str) -> int:
        """Return the local hour of a class's largest hourly weight (the same on every open day)."""
        week = self.table()[self.classes.index(demand_class)].reshape(7, 24)
        return int(np.argmax(week.max(axis=0)))


def load_shapes(path: Path, classes: Sequence[str]) -> tuple[Shapes, Any]:
    """Read the shapes of the given classes (contract order); return them and the raw document."""
    try:
        doc = load_yaml(path.read_text(encoding="utf-8"))
        specs = doc["demand_classes"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise _invalid(path, f"cannot be read as a shape catalogue: {exc}") from exc
    missing = [c for c in classes if c not in specs]
    if missing:
        raise _invalid(path, f"no shape for demand classes {missing}")
    rows = [tuple(weekly_weights(specs[c], path, c).tolist()) for c in classes]
    return Shapes(tuple(classes), tuple(rows)), doc


def weekly_weights(spec: Any, path: Path, name: str) -> np.ndarray:
    """Return one class's 168 weights: day_weights[business day] * hour_weights[hour], normalised to sum 1."""
    try:
        day = np.asarray(spec["day_weights"], dtype=np.float64)
        hour = np.asarray(spec["hour_weights"], dtype=np.float64)
        start = int(spec["day_start_hour"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _invalid(path, f"{name}: {exc}") from exc
    if day.shape != (7,) or hour.shape != (24,) or not 0 <= start < 24:
        raise _invalid(path, f"{name}: needs 7 day_weights, 24 hour_weights and 0 <= day_start_hour < 24")
    if not (np.isfinite(day).all() and np.isfinite(hour).all()) or (day < 0).any() or (hour < 0).any():
        raise _invalid(path, f"{name}: weights must be finite and >= 0")
    hours = np.arange(24)
    business_day = (np.arange(7)[:, None] - (hours[None, :] < start)) % 7
    week = day[business_day] * hour[None, :]
    total = week.sum()
    if total <= 0:
        raise _invalid(path, f"{name}: every weight is zero")
    return (week / total).reshape(SLOTS_PER_WEEK)


def _invalid(path: Path, message: str) -> ArrivalError:
    return ArrivalError(error_code("WORLD", "PROFILE_INVALID"), f"{path}: {message}", file=str(path))
