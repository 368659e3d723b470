"""drake.malloc: glibc's mmap threshold is fixed by the engine, unless the user chose one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from drake.malloc import _is_glibc

CODE = "from drake.malloc import release_large_blocks; print(release_large_blocks())"


@pytest.mark.skipif(not _is_glibc(), reason="glibc only")
def test_threshold_is_set_on_glibc_unless_the_user_set_one() -> None:
    def run(env: dict[str, str]) -> str:
        out = subprocess.run(
            [sys.executable, "-c", CODE], capture_output=True, text=True, check=True, env=env
        )
        return out.stdout.strip()

    base = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    assert run(base) == "True"
    assert run({**base, "MALLOC_MMAP_THRESHOLD_": "262144"}) == "False"
