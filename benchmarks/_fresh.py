"""Benchmarks that compare process-wide settings (OpenMP's wait policy, the allocator) time
each run in a fresh process of the script itself: a setting cannot be undone in-process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def last_line(script: str | Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """The last line ``python script *args`` printed, run from the repository root."""
    out = subprocess.run([sys.executable, str(script), *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]
