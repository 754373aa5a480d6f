"""What glibc's malloc costs a 224-px network pass, and what ``keep_freed_memory`` saves.

Every stage calls ``replication.pipeline.keep_freed_memory``: freed memory is kept for reuse
instead of being returned to the kernel and faulted in again. This times forward + backward
passes of EfficientNet-Lite0 at batch 16 (the Sanity Checks randomization stages' work), each
mode in fresh processes, alternately, and prints the medians of the pass time, the minor page
faults and the kernel's CPU seconds:

    python benchmarks/allocator.py     # writes benchmarks/results/allocator.json

Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from _fresh import last_line

ROOT = Path(__file__).resolve().parents[1]
MODES = ("default", "keep_freed_memory")


def measure(mode: str, passes: int, batch: int) -> dict:
    """In this process: the median pass (ms), and the page faults and kernel seconds of all."""
    import resource

    import torch

    from replication.models import create_model
    from replication.pipeline import flush_denormals, keep_freed_memory

    flush_denormals()
    if mode == "keep_freed_memory" and not keep_freed_memory():
        raise SystemExit("keep_freed_memory applies to glibc only")
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0").model.eval()
    x = torch.randn(batch, 3, 224, 224)

    def one() -> float:
        inputs = x.clone().requires_grad_(True)
        start = time.perf_counter()
        torch.autograd.grad(model(inputs)[:, 0].sum(), inputs)
        return time.perf_counter() - start

    one()  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF)
    times = [one() for _ in range(passes)]
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"pass_ms": 1000 * statistics.median(times),
            "page_faults": after.ru_minflt - before.ru_minflt,
            "kernel_s": after.ru_stime - before.ru_stime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per mode")
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/allocator.json")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.passes, args.batch)))
        return
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for _ in range(args.processes):
        for mode in MODES:
            runs[mode].append(json.loads(last_line(__file__, "--child", mode, "--passes",
                                                   str(args.passes), "--batch", str(args.batch))))
    rows = []
    for mode, measured in runs.items():
        row = {"mode": mode, **{key: round(statistics.median(r[key] for r in measured), 3)
                                for key in measured[0]},
               "pass_ms_range": [round(min(r["pass_ms"] for r in measured), 1),
                                 round(max(r["pass_ms"] for r in measured), 1)]}
        rows.append(row)
        print(f"{mode}: {row['pass_ms']:.0f} ms a pass (range {row['pass_ms_range']}), "
              f"{row['page_faults']:,.0f} page faults and {row['kernel_s']:.2f} s in the kernel "
              f"over {args.passes} passes")
    args.out.write_text(json.dumps({
        "machine": platform.processor() or platform.machine(), "libc": platform.libc_ver(),
        "date": time.strftime("%Y-%m-%d"), "model": "efficientnet_lite0", "batch": args.batch,
        "passes": args.passes, "processes": args.processes, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
