"""Writable copies of the shipped config folder for tests that edit a policy (a new parameter_hash) or a profile."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

from arrival_core import contracts


def config_copy(tmp_path: Path, name: str = "config") -> Path:
    """A copy of the shipped config folder under `tmp_path` (made once; a second call returns the same copy)."""
    config = tmp_path / name
    if not config.exists():
        shutil.copytree(contracts.DEFAULT_CONFIG_DIR, config)
    return config


def edited_config(tmp_path: Path, policy_id: str, change: Callable[[dict], None], name: str = "config") -> Path:
    """A config copy with one policy's YAML document edited in place by `change`."""
    config = config_copy(tmp_path, name)
    file = config / f"{policy_id}.yaml"
    doc = yaml.safe_load(file.read_text())
    change(doc)
    file.write_text(yaml.safe_dump(doc, sort_keys=False))
    return config


def replaced_config(tmp_path: Path, file_name: str, old: str, new: str) -> Path:
    """A config copy with `old` replaced by `new` in one file's text (which must hold `old`)."""
    config = config_copy(tmp_path)
    text = (config / file_name).read_text()
    assert old in text
    (config / file_name).write_text(text.replace(old, new))
    return config
