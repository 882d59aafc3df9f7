"""The synthetic upstream world: profiles, population, λ surfaces and HashGate bundles, via the store."""
from .generate import WorldInfo, create_world, ensure_seed, world_identity
from .profiles import available_profiles, load_profile

__all__ = ["WorldInfo", "available_profiles", "create_world", "ensure_seed", "load_profile", "world_identity"]
