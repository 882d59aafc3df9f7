"""Regenerate golden_digests_tiny.txt: the sha256 of every 5B output of the tiny world, for refactors that must
change no byte; with --content, golden_content_tiny.txt: the sha256 of every output's decoded values, for a change
of file format that must change no value.

    python tests/data/make_golden_digests.py [--profile tiny|demo] [--content] [--out FILE]

Runs S0 → audit through `arrival_core.pipeline` for seed 42 and both scenarios, once with the shipped policies
(Poisson) and once with `count_law_id: nb2`, in fresh temporary run roots, and lists every published 5B file
(run reports excluded: they carry run ids and wall-clock times) with its sha256, by law and relative path.

A content digest reads a parquet file back as plain Arrow columns (dictionaries decoded, nullability and encodings
dropped) and hashes their IPC serialisation; a JSON document is hashed in canonical form with every `sha256*`
field masked (those name file bytes, which a format change moves).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from arrival_core import contracts, pipeline
from arrival_core.identity import PartitionKey
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


def _plain(dtype: pa.DataType) -> pa.DataType:
    return dtype.value_type if pa.types.is_dictionary(dtype) else dtype


def _masked(doc: object) -> object:
    if isinstance(doc, dict):
        return {k: "<sha256>" if k.startswith("sha256") else _masked(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_masked(v) for v in doc]
    return doc


def content_digest(path: Path) -> str:
    """The sha256 of a file's values, independent of its encoding (see the module docstring)."""
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        schema = pa.schema([pa.field(f.name, _plain(f.type)) for f in table.schema])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, schema) as writer:
            writer.write_table(table.cast(schema).combine_chunks())
        return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
    if path.suffix == ".json":
        text = json.dumps(_masked(json.loads(path.read_bytes())), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digests(profile: str, *, content: bool = False) -> list[str]:
    """`law relative-path sha256` lines for every 5B output of the profile's world (of its values: `content`)."""
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
                    runner(store, PartitionKey(SEED, scenario_id))
            base = root / "data" / "layer2" / "5B"
            for path in sorted(base.rglob("*")):
                if path.is_file() and "run_report" not in path.parts:
                    digest = content_digest(path) if content else hashlib.sha256(path.read_bytes()).hexdigest()
                    lines.append(f"{law} {path.relative_to(root)} {digest}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--content", action="store_true", help="digest decoded values, not file bytes")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    what, keeps = ("values", "value") if args.content else ("bytes", "byte")
    header = [
        f"# Golden sha256 of the {what} of every 5B output of the {args.profile} world (default world_seed), seed {SEED},",
        "# both scenarios, count laws poisson (shipped policies) and nb2; run reports excluded.",
        f"# Made by tests/data/make_golden_digests.py; a change that is meant to keep every {keeps} keeps this file.",
        "# law relative_path sha256",
    ]
    text = "\n".join(header + digests(args.profile, content=args.content)) + "\n"
    kind = "content" if args.content else "digests"
    out = args.out or HERE / f"golden_{kind}_{args.profile}.txt"
    out.write_text(text)
    print(f"written {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
