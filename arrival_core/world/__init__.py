"""The synthetic upstream world: profiles, population, λ surfaces and HashGate bundles, via the store."""
from .profiles import available_profiles, load_profile

_GENERATE = ("WorldInfo", "create_world", "ensure_seed", "verify_seed_file", "world_identity")


def __getattr__(name: str):
    """The generator's names, imported on first use (a command that lists profiles need not load it)."""
    if name in _GENERATE:
        from . import generate
        return getattr(generate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["WorldInfo", "available_profiles", "create_world", "ensure_seed", "load_profile", "verify_seed_file",
           "world_identity"]
