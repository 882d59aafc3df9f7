"""Regenerate golden_digests_tiny.txt: the sha256 of every 5B output of the tiny world, for refactors that must
change no byte.

    python tests/data/make_golden_digests.py [--profile tiny|demo] [--out FILE]

Runs S0 → audit through `arrival_core.pipeline` for seed 42 and both scenarios, once with the shipped policies
(Poisson) and once with `count_law_id: nb2`, in fresh temporary run roots, and lists every published 5B file
(run reports excluded: they carry run ids and wall-clock times) with its sha256, by law and relative path.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from arrival_core import contracts, pipeline
from arrival_core.store import Store
from arrival_core.world import create_world

HERE = Path(__file__).resolve().parent
SEED = 42
LAWS = ("poisson", "nb2")
RUNNERS = (pipeline.run_s0, pipeline.run_s1, pipeline.run_s2, pipeline.run_s3, pipeline.run_audit)


def config_for(law: str, workdir: Path) -> Path:
    """The shipped config dir, or a copy of it with another count law."""
    if law == "poisson":
        return contracts.DEFAULT_CONFIG_DIR
    config = workdir / f"config-{law}"
    shutil.copytree(contracts.DEFAULT_CONFIG_DIR, config)
    policy = config / "arrival_count_config_5B.yaml"
    doc = yaml.safe_load(policy.read_text())
    doc["count_law_id"] = law
    policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    return config


def digests(profile: str) -> list[str]:
    """`law relative-path sha256` lines for every 5B output of the profile's world."""
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        world = create_world(profile, workdir / "world", seeds=(SEED,))
        for law in LAWS:
            root = workdir / f"root-{law}"
            shutil.copytree(world.root, root)
            store = Store(run_root=root, config_dir=config_for(law, workdir))
            for scenario_id in pipeline.world_scenarios(store):
                for runner in RUNNERS:
                    runner(store, seed=SEED, scenario_id=scenario_id)
            base = root / "data" / "layer2" / "5B"
            for path in sorted(base.rglob("*")):
                if path.is_file() and "run_report" not in path.parts:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    lines.append(f"{law} {path.relative_to(root)} {digest}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    header = [
        f"# Golden sha256 of every 5B output of the {args.profile} world (default world_seed), seed {SEED}, both",
        "# scenarios, count laws poisson (shipped policies) and nb2; run reports excluded.",
        "# Made by tests/data/make_golden_digests.py; a change that is meant to keep every byte keeps this file.",
        "# law relative_path sha256",
    ]
    text = "\n".join(header + digests(args.profile)) + "\n"
    out = args.out or HERE / f"golden_digests_{args.profile}.txt"
    out.write_text(text)
    print(f"written {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
