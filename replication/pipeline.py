"""The stage contract: every DVC stage is declared once, here or in its paper's ``stages.py``.

    Stage("egc_saturation", "replication.experiments.expected_gradcam.saturation:run",
          reads=("seed", "imagenet.source", "expected_gradcam.saturation", …),
          deps={"mnist": "datasets/mnist", …},
          outs={"curves": Out("results/expected_gradcam/saturation_curves.csv", cache=False),
                "metrics": Out("metrics/expected_gradcam/saturation.json", metric=True)})

From the declarations come: the command line (``python -m replication <stage> [matrix values]
--settings settings/<stage>.yaml --<dep> PATH … --<out> PATH …``), ``dvc.yaml``
(``python -m replication dvc-yaml``; a test checks the committed file equals it), each stage's
code dependencies (the import closure of its function within ``replication/``, so they are
correct by construction) and each stage's settings file: the ``settings`` stage writes
``settings/<stage>.yaml`` holding exactly the keys the stage ``reads``, resolved for the active
profile, and DVC tracks that file as the stage's params. A stage reads its settings from that
file only, through ``StageContext.settings``, which refuses a key the stage did not declare.
"""

from __future__ import annotations

import ast
import importlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product
from pathlib import Path
from typing import Any

import yaml

from replication.errors import ConfigError, DataError

log = logging.getLogger("replication")

PACKAGE_ROOT = Path(__file__).resolve().parent
SETTINGS_DIR = "settings"
# The lists of stages that make up the pipeline, in dvc.yaml order ("module:attribute").
STAGE_LISTS = (
    "replication.stages:STAGES",
    "replication.experiments.sanity_checks.stages:STAGES",
    "replication.experiments.parchgrad.stages:STAGES",
    "replication.experiments.expected_gradcam.stages:STAGES",
    "replication.stages:REPORT",
)


@dataclass(frozen=True)
class Out:
    """One output path: ``cache=False`` outputs are committed to git (tables, metrics,
    figures); ``metric`` marks a DVC metrics file; ``persist`` keeps it while the stage runs
    (DVC would delete it first)."""

    path: str
    cache: bool = True
    metric: bool = False
    persist: bool = False


@dataclass(frozen=True)
class Stage:
    """One DVC stage: a library function ``run(ctx)`` with its settings, inputs and outputs.

    Paths may name the stage's matrix keys as ``{key}``; ``reads`` are dotted keys of the
    effective settings (a per-model section's model entries come with it).
    """

    name: str
    run: str  # "module:function"
    reads: tuple[str, ...] = ()
    deps: Mapping[str, str] = field(default_factory=dict)
    outs: Mapping[str, Out] = field(default_factory=dict)
    matrix: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    help: str = ""
    params_file: str | None = None  # read whole instead of a settings file (the settings stage)
    cost: str | None = None  # "module:function": the passes its settings imply (replication.cost)
    # Judges the outputs of models it does not load (the claims): its metrics are stamped
    # whenever `stand_in_weights` is on (it must read it), as the figures and the report are.
    judges_models: bool = False

    @property
    def module(self) -> str:
        return self.run.partition(":")[0]

    @property
    def settings_path(self) -> str:
        return f"{SETTINGS_DIR}/{self.name}.yaml"

    def items(self) -> list[dict[str, str]]:
        keys = list(self.matrix)
        return [dict(zip(keys, values)) for values in product(*self.matrix.values())] or [{}]

    def function(self) -> Callable[["StageContext"], Any]:
        module, _, name = self.run.partition(":")
        return getattr(importlib.import_module(module), name)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def fill(template: str, item: Mapping[str, str]) -> str:
    try:
        return template.format(**item)
    except KeyError as err:
        raise ConfigError(f"path {template!r} names {err} which is not a matrix key") from None


# --- the registry -------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def stages() -> dict[str, Stage]:
    found: dict[str, Stage] = {}
    for entry in STAGE_LISTS:
        module, _, attribute = entry.partition(":")
        for stage in getattr(importlib.import_module(module), attribute):
            if stage.name in found:
                raise ValueError(f"stage {stage.name!r} is declared twice")
            found[stage.name] = stage
    return found


def get_stage(name: str) -> Stage:
    from replication.settings import closest

    known = stages()
    if name not in known:
        raise ConfigError(f"unknown stage {name!r}; {closest(name, list(known))}"
                          .replace("valid keys", "stages"))
    return known[name]


def producer(path: str) -> str | None:
    """The stage (with its matrix item) whose output ``path`` is, for error messages."""
    for stage in stages().values():
        for item in stage.items():
            for out in stage.outs.values():
                produced = fill(out.path, item)
                if path == produced or path.startswith(produced.rstrip("/") + "/"):
                    suffix = "@" + "-".join(item.values()) if item else ""
                    return stage.name + suffix
    return None


# --- settings of one stage ----------------------------------------------------------------------

def extract(effective: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The part of the effective settings a stage reads: each dotted key, and, where the key
    lies in a per-model section, the same key of each of that section's model entries."""
    from replication.config import MODELS

    result: dict[str, Any] = {}

    def put(path: list[str], value: Any) -> None:
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value

    for key in keys:
        parts = key.split(".")
        node: Any = effective
        for depth, part in enumerate(parts):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(f"a stage reads {key!r}, which the settings do not have")
            models = node.get(MODELS) if depth and isinstance(node.get(MODELS), Mapping) else None
            if models is not None and is_per_model(parts[:depth]):
                rest = parts[depth:]
                for name, entry in models.items():
                    value: Any = entry
                    for p in rest:
                        value = value[p]
                    put([*parts[:depth], MODELS, name, *rest], value)
            node = node[part]
        put(parts, node)
    return result


def is_per_model(path: list[str]) -> bool:
    from replication.config import PerModelSettings, _schema
    from replication.settings import schema_keys, settings_class

    cls: Any = _schema()
    for part in path:
        cls = settings_class(schema_keys(cls).get(part)) if cls is not None else None
    return cls is not None and issubclass(cls, PerModelSettings)


def write_stage_settings(params: Mapping[str, Any], folder: Path) -> None:
    """One ``<stage>.yaml`` per stage: the keys it reads (what DVC tracks as its params)."""
    header = ("# Written by the `settings` stage from params.yaml: the settings this stage reads,\n"
              "# resolved for profile {profile}. Edit params.yaml, not this file.\n")
    for stage in stages().values():
        if stage.params_file:
            continue
        values = extract(params, stage.reads)
        text = header.format(profile=params["profile"]) + (yaml.safe_dump(
            values, sort_keys=False, allow_unicode=True, width=100) if values else "{}\n")
        (folder / f"{stage.name}.yaml").write_text(text)


def section_type(key: str) -> Any:
    """The annotation of a dotted key in the schema (for typing a stage's settings)."""
    from replication.config import _schema
    from replication.settings import mapping_values, schema_keys, settings_class

    hint: Any = _schema()
    for part in key.split("."):
        cls = settings_class(hint)
        if cls is not None:
            hints = schema_keys(cls)
            if part not in hints:
                raise ConfigError(f"the schema has no key {key!r}")
            hint = hints[part]
        else:
            values = mapping_values(hint)
            if values is None:
                raise ConfigError(f"the schema has no key {key!r}")
            hint = values
    return hint


# --- the context a stage runs in ----------------------------------------------------------------

class StageContext:
    """What a stage function receives: its settings, its paths, its item, the device, timing.

    ``ctx.settings("expected_gradcam.saturation", model="mnist_cnn")`` returns that key's value
    (typed when the schema has a class for it) for the model; a key the stage does not declare
    in ``reads`` is an error, so what the stage reads is what DVC tracks.
    """

    def __init__(self, stage: Stage, settings: Mapping[str, Any], inputs: Mapping[str, Path],
                 outputs: Mapping[str, Path], item: Mapping[str, str] | None = None):
        self.stage, self.item = stage, dict(item or {})
        self._settings = settings
        self.inputs, self.outputs = dict(inputs), dict(outputs)
        self.started = time.perf_counter()
        self.cache: dict[Any, Any] = {}
        self.stand_in = False  # set when a model with stand-in weights was loaded

    def settings(self, key: str, model: str | None = None) -> Any:
        from replication.config import MODELS
        from replication.settings import convert

        if not any(key == r or key.startswith(r + ".") for r in self.stage.reads):
            raise ConfigError(f"stage {self.stage.name} reads {key!r} without declaring it: add "
                              f"it to the stage's reads (so DVC tracks it)")
        parts = key.split(".")
        value: Any = self._settings
        path = parts
        if model is not None:
            for depth in range(1, len(parts) + 1):  # the section itself may hold `models`
                node = _lookup(self._settings, parts[:depth])
                models = node.get(MODELS) if isinstance(node, Mapping) else None
                if isinstance(models, Mapping) and model in models:
                    path = [*parts[:depth], MODELS, model, *parts[depth:]]
                    break
        value = _lookup(self._settings, path)
        return convert(section_type(key), value, key)

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 1)

    def output(self, name: str) -> Path:
        return self.outputs[name]

    def input(self, name: str) -> Path:
        return self.inputs[name]

    @property
    def label(self) -> str:
        """The stage's name with its matrix item (``train@mnist-cnn-true``)."""
        return self.stage.name + ("@" + "-".join(self.item.values()) if self.item else "")

    def done(self) -> None:
        if self.stand_in or (self.stage.judges_models and self.settings("stand_in_weights")):
            self._stamp_metrics()
        written = ", ".join(str(p) for p in self.outputs.values())
        log.info("%s: wrote %s in %.1f s", self.label, written, self.seconds)

    def _stamp_metrics(self) -> None:
        """Every metrics file of a run on stand-in weights says so, first thing."""
        import json

        from replication.fileio import write_json
        from replication.models.imagenet import stand_in_stamped

        for name, out in self.stage.outs.items():
            path = self.outputs[name]
            if not (out.metric or Path(out.path).parts[0] == "metrics"):
                continue
            for file in ([path] if path.is_file() else sorted(path.rglob("*.json"))):
                if file.suffix == ".json":
                    write_json(file, stand_in_stamped(json.loads(file.read_text())))


def _lookup(tree: Mapping[str, Any], path: list[str]) -> Any:
    node: Any = tree
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"the stage settings have no {'.'.join(path)!r}: run `dvc repro` "
                              "(the settings stage writes them) or check the stage's reads")
        node = node[part]
    return node


def read_stage_settings(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path} is missing: it is written by the `settings` stage; run "
                        "`dvc repro settings` (or `make reproduce`)")
    return yaml.safe_load(path.read_text()) or {}


def check_inputs(stage: Stage, inputs: Mapping[str, Path]) -> None:
    for name, path in inputs.items():
        if not path.exists():
            made_by = producer(str(path))
            how = (f"it is an output of stage {made_by}: run `dvc repro {made_by}`" if made_by
                   else "it is an input you supply (see the README)")
            raise DataError(f"{stage.name}: {path} is missing; {how}")


# --- signals ------------------------------------------------------------------------------------

class Interrupted(BaseException):
    """SIGTERM or SIGINT: unwinds the stage (atomic writes discard their temporary files)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """Stop within a moment on SIGTERM and Ctrl-C. Lightning's Trainer composes its own
    SIGTERM notifier with this handler (it calls an existing one), so training stops too."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)


# --- import closure (code dependencies) ---------------------------------------------------------

def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != "replication":
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (lazy imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if path.name == "__init__.py" else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_closure(module: str) -> list[Path]:
    """The files of ``replication`` that ``module`` imports, directly or not (parents'
    ``__init__`` files included, since Python runs them)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # the packages on the way run their __init__
            path = _module_file(".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(_imports(path))
    return sorted(seen)


def code_deps(stage: Stage) -> list[str]:
    """The stage's code dependencies as repository paths: whole package folders where every
    module of the folder is in the closure, files otherwise."""
    modules = [stage.module]
    if stage.name == "settings":  # it writes what every declaration reads
        modules += [entry.partition(":")[0] for entry in STAGE_LISTS]
    files = {p.relative_to(PACKAGE_ROOT.parent) for m in modules for p in import_closure(m)}
    folders = sorted({f.parent for f in files}, key=lambda p: len(p.parts))
    covered: list[Path] = []
    for folder in folders:
        if folder == Path("replication") or any(folder.is_relative_to(c) for c in covered):
            continue
        modules = {p.relative_to(PACKAGE_ROOT.parent)
                   for p in (PACKAGE_ROOT.parent / folder).rglob("*.py")}
        if modules and modules <= files:
            covered.append(folder)
    kept = [str(c) for c in covered]
    kept += [str(f) for f in sorted(files) if not any(f.is_relative_to(c) for c in covered)]
    return sorted(kept)


# --- dvc.yaml -----------------------------------------------------------------------------------

def _dvc_template(template: str, matrix: Mapping[str, Any]) -> str:
    return template.format(**{key: "${item.%s}" % key for key in matrix})


def dvc_stage(stage: Stage) -> dict[str, Any]:
    t = lambda s: _dvc_template(s, stage.matrix)  # noqa: E731
    command = ["python -m replication", stage.name, *("${item.%s}" % k for k in stage.matrix),
               f"--params {stage.params_file}" if stage.params_file
               else f"--settings {stage.settings_path}"]
    command += [f"{_flag(name)} {t(path)}" for name, path in stage.deps.items()]
    command += [f"{_flag(name)} {t(out.path)}" for name, out in stage.outs.items()]
    entry: dict[str, Any] = {}
    if stage.matrix:
        entry["matrix"] = {k: list(v) for k, v in stage.matrix.items()}
    entry["cmd"] = " ".join(command)
    deps = [t(p) for p in stage.deps.values()] + code_deps(stage)
    entry["deps"] = list(dict.fromkeys(deps))
    entry["params"] = [{stage.params_file or stage.settings_path: None}]

    def flags(out: Out) -> dict[str, Any]:
        options = {}
        if not out.cache:
            options["cache"] = False
        if out.persist:
            options["persist"] = True
        return options

    outs = [({t(o.path): flags(o)} if flags(o) else t(o.path))
            for o in stage.outs.values() if not o.metric]
    metrics = [({t(o.path): flags(o)} if flags(o) else t(o.path))
               for o in stage.outs.values() if o.metric]
    if outs:
        entry["outs"] = outs
    if metrics:
        entry["metrics"] = metrics
    return entry


DVC_HEADER = """\
# Generated by `python -m replication dvc-yaml` from the stage declarations
# (replication/stages.py and replication/experiments/<paper>/stages.py): edit those, not this
# file. Each stage's params are its settings file (written by the `settings` stage from
# params.yaml) and its code deps are the import closure of its function.
"""


def render_dvc_yaml() -> str:
    body = {"stages": {s.name: dvc_stage(s) for s in stages().values()}}
    text = yaml.safe_dump(body, sort_keys=False, width=100, default_flow_style=False)
    return DVC_HEADER + text.replace(": null\n", ":\n")


# --- command line -------------------------------------------------------------------------------

def add_stage_commands(commands: Any) -> None:
    """One sub-command per stage: matrix values positional, every path an option."""
    for stage in stages().values():
        parser = commands.add_parser(stage.name, help=stage.help or stage.name)
        for key, values in stage.matrix.items():
            parser.add_argument(key, choices=list(values))
        if stage.params_file:
            parser.add_argument("--params", default=stage.params_file, help="params.yaml")
        else:
            parser.add_argument("--settings", default=stage.settings_path,
                                help="the stage's settings file (written by the settings stage)")
        for name in [*stage.deps, *stage.outs]:
            parser.add_argument(_flag(name), dest=name, required=True, metavar="PATH")
        parser.set_defaults(stage=stage)


TIMINGS_DIR = Path("timings")  # one JSON per stage run (git-ignored; `timings` tabulates them)


def flush_denormals() -> None:
    """Compute with subnormal floats flushed to zero, as GPUs do by default. On a CPU the MNIST
    CNN's training met subnormals as its L2 penalty shrank the weights, and every step slowed
    from 27 to 62 ms (benchmarks/results/denormals.md); values below 1.2e-38 change nothing
    else. Set before any parallel region, so OpenMP's threads inherit it."""
    import torch

    torch.set_flush_denormal(True)


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEPT_FREE_BYTES = 1 << 30  # freed memory at the heap's top kept for reuse, up to 1 GiB


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    By default a block above its mmap threshold (128 KiB, rising to at most 32 MiB: less than
    the activations of an EfficientNet batch) is a fresh mmap, and freed heap tops are trimmed,
    so each large tensor is paid again in page faults:
    a third of the Lite0 randomization stage's CPU time was the kernel's, and the same pass
    varied by 30 % between runs with it (``benchmarks/allocator.py``). Outputs are unchanged.
    Returns whether it applied (only where the C library is glibc)."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, KEPT_FREE_BYTES))


def run_stage(stage: Stage, args: Any, started: float | None = None) -> None:
    flush_denormals()
    keep_freed_memory()
    item = {key: getattr(args, key) for key in stage.matrix}
    inputs = {name: Path(getattr(args, name)) for name in stage.deps}
    outputs = {name: Path(getattr(args, name)) for name in stage.outs}
    check_inputs(stage, inputs)
    if stage.params_file:
        inputs["params"] = Path(args.params)
        settings: dict[str, Any] = {}
    else:
        settings = read_stage_settings(Path(args.settings))
    context = StageContext(stage, settings, inputs, outputs, item)
    stage.function()(context)
    context.done()
    record_timing(context, started)


def record_timing(context: StageContext, started: float | None) -> None:
    """``timings/<stage>[@item].json``: the stage function's seconds and the whole process's
    (interpreter start-up, imports and loading included), for the per-stage table."""
    import json

    name = context.label
    finished = time.time()
    record = {"stage": name, "compute_seconds": context.seconds,
              "process_seconds": round(finished - started, 1) if started else None,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(finished))}
    TIMINGS_DIR.mkdir(exist_ok=True)
    (TIMINGS_DIR / f"{name}.json").write_text(json.dumps(record) + "\n")


__all__ = ["Interrupted", "Out", "Stage", "StageContext", "code_deps", "extract", "get_stage",
           "import_closure", "install_signal_handlers", "render_dvc_yaml", "stages",
           "write_stage_settings"]
