"""What a profile costs before it runs: the model passes each stage's settings imply.

A stage may declare ``cost="module:function"``: ``function(ctx)`` receives the stage's
``StageContext`` (its settings, no paths) and returns one ``Cost`` per model and piece of work,
counted with the engine's own ``Attribution.passes()`` where maps are made. Nothing is computed.

``python -m replication cost [--profile P] [--throughput FILE | --tflops T]`` prints the passes
per stage and an estimate of the time: from a measured throughput table (seconds per image and
pass for each model on a device, as ``benchmarks/gpu.py`` writes) or, without one, from each
model's FLOPs (counted once on a CPU forward) at an assumed sustained throughput.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

BACKWARD_FACTOR = 2.0  # a backward pass costs about twice a forward (the usual estimate)


@dataclass(frozen=True)
class Cost:
    """Passes per image summed over the images of one piece of work of a stage."""

    model: str
    what: str
    forward_backward: int
    forward: int = 0


def method_passes(card, method: str, params: Mapping, images: int) -> Cost:
    """The passes of ``images`` maps of an engine method, from the method's own count."""
    from replication.attribution import create_method

    passes = create_method(method, card, **dict(params)).passes()
    return Cost(card.name, method, passes.forward_backward * images, passes.forward * images)


def stage_costs(params: Mapping, stages: Iterable | None = None) -> list[tuple[str, Cost]]:
    """(stage name with its matrix item, cost) for every stage that declares a cost."""
    from replication.pipeline import StageContext, extract
    from replication.pipeline import stages as all_stages

    rows = []
    for stage in stages or all_stages().values():
        if not stage.cost:
            continue
        module, _, name = stage.cost.partition(":")
        import importlib

        function = getattr(importlib.import_module(module), name)
        for item in stage.items():
            context = StageContext(stage, extract(params, stage.reads), {}, {}, item)
            label = stage.name + ("@" + "-".join(item.values()) if item else "")
            rows += [(label, cost) for cost in function(context)]
    return rows


def model_flops(name: str) -> float:
    """Forward FLOPs of one image through ``name`` (counted on the CPU, random weights)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from replication.models import create_model

    card = create_model(name) if name.startswith("mnist") else create_model(name,
                                                                            pretrained=False)
    size, channels = card.preprocessing.input_size, card.preprocessing.channels
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        card.model.eval()(torch.zeros(1, channels, size, size))
    return float(counter.get_total_flops())


def seconds_per_pass(models: Iterable[str], throughput: Path | None,
                     tflops: float) -> tuple[dict[str, tuple[float, float]], str]:
    """Model -> (seconds per forward+backward, per forward) of one image, and the source."""
    if throughput is not None:
        table = json.loads(Path(throughput).read_text())
        found = {m: (v["forward_backward_ms"] / 1e3, v["forward_ms"] / 1e3)
                 for m, v in table["models"].items()}
        missing = sorted(set(models) - set(found))
        if missing:
            from replication.errors import ConfigError

            raise ConfigError(f"{throughput} has no measurement for {missing}")
        return found, f"measured on {table.get('device', 'a device')} ({throughput})"
    rate = tflops * 1e12
    result = {}
    for model in models:
        flops = model_flops(model)
        result[model] = ((1 + BACKWARD_FACTOR) * flops / rate, flops / rate)
    return result, f"assumed {tflops:g} TFLOP/s sustained, FLOPs counted per model"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def render(rows: list[tuple[str, Cost]], rates: Mapping[str, tuple[float, float]],
           source: str) -> str:
    """One line per stage: passes and estimated hours, then the total."""
    by_stage: dict[str, list[Cost]] = {}
    for stage, cost in rows:
        by_stage.setdefault(stage, []).append(cost)
    lines = [f"time estimate: {source}", "",
             "| stage | forward+backward | forward | estimated time |", "|---|---|---|---|"]
    total_fb = total_f = total_s = 0.0
    for stage, costs in by_stage.items():
        fb = sum(c.forward_backward for c in costs)
        f = sum(c.forward for c in costs)
        seconds = sum(c.forward_backward * rates[c.model][0] + c.forward * rates[c.model][1]
                      for c in costs)
        total_fb, total_f, total_s = total_fb + fb, total_f + f, total_s + seconds
        lines.append(f"| {stage} | {fb:,.0f} | {f:,.0f} | {duration(seconds)} |")
    lines.append(f"| **all** | **{total_fb:,.0f}** | **{total_f:,.0f}** | "
                 f"**{duration(total_s)}** |")
    return "\n".join(lines) + "\n"


def run(params_path: str | os.PathLike, profile: str | None, throughput: Path | None,
        tflops: float) -> str:
    from replication.config import load_params

    rows = stage_costs(load_params(params_path, profile))
    rates, source = seconds_per_pass(sorted({c.model for _, c in rows}), throughput, tflops)
    return render(rows, rates, source)
