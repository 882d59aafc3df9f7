"""Every 5B output of the tiny world is pinned, by its bytes and by its values: refactors that are meant to change
no behaviour keep both; a change of file format keeps the values (golden_content_tiny.txt) and renews the bytes."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"


def _load_maker():
    spec = importlib.util.spec_from_file_location("make_golden_digests", DATA / "make_golden_digests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("golden", "content"), [("golden_digests_tiny.txt", False),
                                                 ("golden_content_tiny.txt", True)])
def test_tiny_outputs_match_golden_digests(golden: str, content: bool) -> None:
    expected = [line for line in (DATA / golden).read_text().splitlines() if line and not line.startswith("#")]
    actual = _load_maker().digests("tiny", content=content)
    assert len(actual) == len(expected) == 44
    changed = [a for a, e in zip(actual, expected) if a != e]
    assert actual == expected, f"{len(changed)} output(s) differ from {golden}, first: {changed[:3]}"


def test_golden_bytes_do_not_depend_on_numpys_simd_loops(tmp_path: Path) -> None:
    """The golden bytes again with NumPy's AVX-512 loops switched off (`NPY_DISABLE_CPU_FEATURES`, NumPy ≥ 2.4
    names): with the test above (loops on, where the CPU has them) it shows a CPU with AVX-512 and one without
    write the same files, as every exp and sin of a law is the C library's; and golden files re-pinned on an
    AVX-512 machine with a NumPy exp in a law would fail here."""
    out = tmp_path / "digests.txt"
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}
    subprocess.run([sys.executable, str(DATA / "make_golden_digests.py"), "--out", str(out)], env=env, check=True,
                   capture_output=True, timeout=600)
    assert out.read_text() == (DATA / "golden_digests_tiny.txt").read_text()
