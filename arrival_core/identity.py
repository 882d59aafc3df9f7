"""Identity rules: seed, scenario_id and hex ids validated before any path is built; the parameter_hash law."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .encoding import sha256_hex, uer
from .errors import IDENTITY_INVALID, ArrivalError

SEED_RE = re.compile(r"^(0|[1-9][0-9]{0,19})$")
SCENARIO_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
PARAMETER_HASH_DOMAIN = "5B.parameter_hash.v1"


def validate_seed(seed: object) -> int:
    """Return the seed as an int if it is a decimal unsigned 64-bit integer, else raise IDENTITY_INVALID."""
    text = str(seed) if isinstance(seed, int) and not isinstance(seed, bool) else seed
    if not isinstance(text, str) or not SEED_RE.fullmatch(text) or int(text) >= 1 << 64:
        raise ArrivalError(
            IDENTITY_INVALID,
            f"seed {seed!r} is not an unsigned 64-bit decimal integer (0 <= seed < 2**64, no sign, no leading zeros)",
            field="seed",
            value=repr(seed),
        )
    return int(text)


def validate_scenario_id(scenario_id: object) -> str:
    """Return scenario_id if it matches ^[a-z0-9][a-z0-9_.-]{0,63}$ (and is not a dot path), else raise."""
    if not isinstance(scenario_id, str) or not SCENARIO_RE.fullmatch(scenario_id) or ".." in scenario_id:
        raise ArrivalError(
            IDENTITY_INVALID,
            f"scenario_id {scenario_id!r} must match {SCENARIO_RE.pattern} and contain no '..'",
            field="scenario_id",
            value=repr(scenario_id),
        )
    return scenario_id


def validate_hex64(value: object, name: str) -> str:
    """Return value if it is 64 lowercase hex characters (a sha256 id), else raise IDENTITY_INVALID."""
    if not isinstance(value, str) or not HEX64_RE.fullmatch(value):
        raise ArrivalError(
            IDENTITY_INVALID,
            f"{name} {value!r} is not 64 lowercase hex characters",
            field=name,
            value=repr(value),
        )
    return value


def compute_parameter_hash(upstream_parameter_hash: str, policies: Iterable[tuple[str, str]]) -> str:
    """Return ph = sha256(UER(domain) ‖ UER(upstream ph) ‖ Σ_policy_id-order UER(id) ‖ UER(sha256 of file))."""
    validate_hex64(upstream_parameter_hash, "upstream_parameter_hash")
    parts = [uer(PARAMETER_HASH_DOMAIN), uer(upstream_parameter_hash)]
    for policy_id, file_sha256 in sorted(policies):
        parts.append(uer(policy_id))
        parts.append(uer(validate_hex64(file_sha256, f"sha256 of {policy_id}")))
    return sha256_hex(b"".join(parts))


@dataclass(frozen=True)
class PartitionKey:
    """A validated (seed, scenario_id): how every entry point (CLI, asset, runner) checks a partition's keys
    before any path is built."""

    seed: int
    scenario_id: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", validate_seed(self.seed))
        validate_scenario_id(self.scenario_id)


@dataclass(frozen=True)
class Identity:
    """The identity of one 5B partition: (parameter_hash, manifest_fingerprint, seed, scenario_id)."""

    parameter_hash: str
    manifest_fingerprint: str
    seed: int
    scenario_id: str

    def __post_init__(self) -> None:
        validate_hex64(self.parameter_hash, "parameter_hash")
        validate_hex64(self.manifest_fingerprint, "manifest_fingerprint")
        key = PartitionKey(self.seed, self.scenario_id)
        object.__setattr__(self, "seed", key.seed)

    def columns(self) -> dict[str, str | int]:
        """The identity columns every 5B row carries, with their values (seed as an integer)."""
        return {
            "manifest_fingerprint": self.manifest_fingerprint,
            "parameter_hash": self.parameter_hash,
            "seed": self.seed,
            "scenario_id": self.scenario_id,
        }

    def tokens(self) -> dict[str, str]:
        """Return the path tokens of this identity, as the dataset dictionary names them."""
        return {name: str(value) for name, value in self.columns().items()}
