"""malloc tuning: applied once on glibc, skipped when switched off; trimming is harmless."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str, env_value: str | None) -> str:
    import os

    env = dict(os.environ)
    env.pop("MIRAGE_MALLOC_TUNING", None)
    if env_value is not None:
        env["MIRAGE_MALLOC_TUNING"] = env_value
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout


CODE = """
from runtime import allocator
first = allocator.tune_malloc()
second = allocator.tune_malloc()
for _ in range(allocator.TRIM_EVERY + 1):
    allocator.frame_done()
print(first, second, allocator._state["frames"])
"""


def test_tuning_applies_once_on_glibc_and_can_be_switched_off():
    import platform

    on = _run(CODE, None).split()
    off = _run(CODE, "0").split()
    glibc = platform.libc_ver()[0] == "glibc"
    assert on == [str(glibc), str(glibc), str(501)]
    assert off == ["False", "False", "501"]
