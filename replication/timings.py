"""Where the pipeline's time goes: a table from what each stage run recorded in ``timings/``.

Every stage command writes ``timings/<stage>[@item].json`` (its function's seconds and its whole
process's, start-up and imports included). ``python -m replication timings`` tabulates the
latest record of each stage; with ``--wall-seconds`` (the measured ``make reproduce`` time) it
also writes ``benchmarks/results/pipeline.json`` and the README's table, and reports the time
spent outside every stage process (DVC's hashing and bookkeeping).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

README_START, README_END = "<!-- timings:pipeline:start -->", "<!-- timings:pipeline:end -->"


def read_timings(folder: str | os.PathLike = "timings") -> list[dict]:
    records = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]
    return sorted(records, key=lambda r: r.get("process_seconds") or 0, reverse=True)


def markdown(records: list[dict], wall_seconds: float | None = None) -> str:
    lines = ["| stage | process s | of which computing s |", "|---|---|---|"]
    lines += [f"| {r['stage']} | {r['process_seconds']:.1f} | {r['compute_seconds']:.1f} |"
              for r in records]
    total = sum(r["process_seconds"] or 0 for r in records)
    lines.append(f"| **all {len(records)} stage processes** | **{total:.0f}** | "
                 f"**{sum(r['compute_seconds'] for r in records):.0f}** |")
    if wall_seconds is not None:
        lines.append(f"| outside the stage processes (DVC) | {wall_seconds - total:.0f} | |")
        lines.append(f"| **`make reproduce`, wall** | **{wall_seconds:.0f}** | |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def write_results(records: list[dict], wall_seconds: float, path: str | os.PathLike) -> dict:
    from replication.fileio import write_json

    result = {"wall_seconds": round(wall_seconds, 1),
              "stages": {r["stage"]: r["process_seconds"] for r in records},
              "compute_seconds": {r["stage"]: r["compute_seconds"] for r in records},
              "machine": machine(), "date": time.strftime("%Y-%m-%d")}
    write_json(path, result)
    return result


def update_readme(table: str, readme: str | os.PathLike = "README.md") -> None:
    from replication.fileio import atomic_write_text

    text = Path(readme).read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    atomic_write_text(readme, text[:start] + "\n" + table + text[end:])
