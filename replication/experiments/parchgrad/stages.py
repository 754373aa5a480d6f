"""The ParchGrad DVC stages: each loads what it needs, calls the compute functions of
``experiments`` and writes tidy tables and metrics atomically.

Every stage takes the effective params (``config.load_params``; the ``parchgrad`` section holds
every knob, so the quick, paper and smoke profiles differ only there) and the paths the DVC
stage names. Folders written by a stage are replaced as a whole (``atomic_directory``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Subset, TensorDataset

from replication.attribution import ChannelStatistics
from replication.data import imagenet
from replication.errors import ConfigError, DataError
from replication.experiments.common import (Explainer, ImageSet, imagenet_set, mnist_set,
                                            trained_mnist_model, write_csv)
from replication.experiments.parchgrad import boxes as B
from replication.experiments.parchgrad import experiments as X
from replication.experiments.parchgrad import statistics as S
from replication.experiments.parchgrad import summary as SUM
from replication.fileio import atomic_directory, write_json, write_npz
from replication.models import ModelCard, create_model

log = logging.getLogger("replication")

# statistics set -> (prepared data folder under datasets/, test mode)
STATISTICS_DATA = {
    "mnist_train": ("mnist", "class"),
    "fashion_mnist_train": ("fashion_mnist", "class"),
    "imagenet_sample": ("imagenet_sample", "instance"),
    "ilsvrc2012_val": ("ilsvrc2012_val", "class"),
    "ilsvrc2012_train": ("ilsvrc2012_train", "class"),
}
IMAGE_SOURCES = ("mnist", "fashion_mnist", "imagenet")
STATISTICS_VARIANTS = {"corrected": "", "authors_bug": "-authors-bug"}
LEAKAGE_NOTE = ("the explained images belong to the statistics set (the authors' ILSVRC2012 "
                "validation leakage; for Lite0 in the quick profile the 1000-image sample is "
                "both the statistics set and the evaluated images)")


def section(params: Mapping, name: str) -> dict:
    """``parchgrad.<name>`` with the settings every ParchGrad stage shares added: ``seed`` (the
    stage's random draws), ``shapiro_threshold`` (the authors' 0.05; null turns the filter off)
    and ``spatial_1x1`` (``energy``, or ``authors_abs`` for the authors' |S| on 1×1 maps)."""
    root = params.get("parchgrad")
    if not isinstance(root, Mapping) or name not in root:
        raise ConfigError(f"params.yaml has no parchgrad.{name} section")
    return {**root[name], "seed": int(root.get("seed", params.get("seed", 0))),
            "shapiro_threshold": root.get("shapiro_threshold", X.SHAPIRO_THRESHOLD),
            "spatial_1x1": root.get("spatial_1x1", "energy")}


def _model_entry(params: Mapping, name: str) -> dict:
    models = params["parchgrad"].get("models", {})
    if name not in models:
        raise ConfigError(f"parchgrad.models has no entry {name!r}; it has {sorted(models)}")
    entry = dict(models[name])
    if entry.get("statistics_set") not in STATISTICS_DATA:
        raise ConfigError(f"parchgrad.models.{name}.statistics_set must be one of "
                          f"{sorted(STATISTICS_DATA)}; got {entry.get('statistics_set')!r}")
    if entry.get("images") not in IMAGE_SOURCES:
        raise ConfigError(f"parchgrad.models.{name}.images must be one of {list(IMAGE_SOURCES)}")
    return entry


@dataclass
class Context:
    """Models, statistics and image sets of one stage run, loaded once each."""

    params: Mapping
    datasets: Path
    models: Path
    statistics: Path | None = None
    _cards: dict = field(default_factory=dict)
    _stats: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)

    def card(self, name: str) -> ModelCard:
        if name not in self._cards:
            entry = _model_entry(self.params, name)
            if entry.get("checkpoint"):
                if entry["model"] != "mnist_cnn":
                    raise ConfigError(f"parchgrad.models.{name}: checkpoints are supported for "
                                      "mnist_cnn only")
                card = trained_mnist_model(self.models / entry["checkpoint"], "cnn")
            else:
                card = create_model(entry["model"])
            card.model.eval()
            self._cards[name] = card
        return self._cards[name]

    def stats(self, name: str, variant: str | None = None) -> ChannelStatistics:
        """The statistics the experiments use: ``parchgrad.statistics_variant`` chooses the
        corrected file or, for class-wise sets, the authors' bug-compatible one."""
        if variant is None:
            chosen = self.params["parchgrad"].get("statistics_variant", "corrected")
            if chosen not in STATISTICS_VARIANTS:
                raise ConfigError(f"parchgrad.statistics_variant must be one of "
                                  f"{list(STATISTICS_VARIANTS)}; got {chosen!r}")
            variant = STATISTICS_VARIANTS[chosen]
            if variant and not (self.statistics / f"{name}{variant}.pt").is_file():
                variant = ""  # instance-wise sets have no bug-compatible file
        key = (name, variant)
        if key not in self._stats:
            if self.statistics is None:
                raise ConfigError("this stage was given no statistics folder")
            self._stats[key] = ChannelStatistics.load(self.statistics / f"{name}{variant}.pt")
        return self._stats[key]

    def images(self, name: str, count: int) -> ImageSet:
        entry = _model_entry(self.params, name)
        seed = int(self.params["parchgrad"].get("seed", 0))
        if entry["images"] in ("mnist", "fashion_mnist"):
            images = mnist_set(self.datasets / entry["images"], count, "test")
            note = f"the first {count} {entry['images']} test images"
        else:
            source = self.params.get("imagenet", {}).get("source", "sample")
            folder, fallback = imagenet.evaluation_folder(
                source, self.datasets / "imagenet_sample", self.datasets / "ilsvrc2012_val")
            images = imagenet_set(folder, self.card(name), count, seed)
            note = f"{count} images of {folder.name} drawn with seed {seed}" + (
                f"; {fallback}" if fallback else "")
        stats_meta = self.stats(name).meta if self.statistics is not None else {}
        leakage = entry["images"] == "imagenet" and str(stats_meta.get("statistics_set_key")) in (
            "imagenet_sample", "ilsvrc2012_val")
        self.notes[name] = {"images": note, "leakage": LEAKAGE_NOTE if leakage else "",
                            "statistics_set": stats_meta.get("statistics_set", ""),
                            "statistics_mode": stats_meta.get("mode", "")}
        return images

    def explainer(self) -> Explainer:
        settings = self.params["parchgrad"].get("explainer", {})
        return Explainer(settings.get("accelerator", "cpu"), settings.get("devices", 1),
                         int(settings.get("batch_size", 16)))


def _models_of(settings: Mapping, key: str = "images") -> dict[str, int]:
    """Models to explain and their image counts; a count of 0 drops a model (profiles merge
    mappings, so a profile removes a base model by setting its count to 0)."""
    models = settings.get(key) or {}
    if not isinstance(models, Mapping):
        raise ConfigError(f"parchgrad: {key} must map model names to image counts")
    return {str(k): int(v) for k, v in models.items() if v}


def _metrics(params: Mapping, name: str, started: float, context: Context | None,
             **extra) -> dict:
    result = {"stage": f"parchgrad_{name}", "profile": params.get("profile"),
              "seconds": round(time.perf_counter() - started, 1),
              "torch_threads": torch.get_num_threads()}
    if context is not None:
        result["models"] = context.notes
    result.update(extra)
    return result


# --------------------------------------------------------------------------- statistics

def _statistics_data(entry: dict, datasets: Path, card: ModelCard, validation_size: int,
                     limit: int | None) -> tuple[object, str, str, str]:
    """(dataset, statistics set key, mode, note) of a model entry, with the ILSVRC fallback."""
    key = entry["statistics_set"]
    folder_name, mode = STATISTICS_DATA[key]
    note = ""
    if key in ("mnist_train", "fashion_mnist_train"):
        data = S.mnist_statistics_set(datasets / folder_name, validation_size)
    else:
        folder = datasets / folder_name
        if key == "ilsvrc2012_val" and not (folder / "labels.csv").is_file():
            folder, key, mode = datasets / "imagenet_sample", "imagenet_sample", "instance"
            note = ("ILSVRC2012 validation was not supplied: instance-wise statistics on the "
                    "1000-image sample instead")
            log.warning(note)
        elif not (folder / "labels.csv").is_file():
            raise DataError(f"{folder} is not a prepared ImageNet folder (images/ + labels.csv)"
                            + (": prepare ILSVRC2012 training images there yourself"
                               if key == "ilsvrc2012_train" else ""))
        data = S.imagenet_statistics_set(folder, card)
    if limit is not None and limit < len(data):
        data = (TensorDataset(*(t[:limit] for t in data.tensors))
                if isinstance(data, TensorDataset) else Subset(data, range(limit)))
        note = (note + "; " if note else "") + f"limited to the first {limit} images (smoke)"
    return data, key, mode, note


def run_statistics(params: Mapping, *, datasets: Path, models: Path, out: Path,
                   metrics: Path) -> dict:
    """Channel statistics of every model in ``parchgrad.statistics.models``.

    Writes ``out/<model>.pt`` (corrected), ``out/<model>-authors-bug.pt`` for class-wise sets
    when ``authors_bug`` is on (claim C12), and ``metrics/<model>.json`` (the summary: Shapiro
    fractions for C11, float32 ties, dead channels, timings).
    """
    settings = section(params, "statistics")
    X.require(settings, "models", "equal_var", "pvalue_precision", "shapiro",
              "shapiro_max_samples", "authors_bug", "limit", "batch_size", "q_for_ties",
              section="parchgrad.statistics")
    validation_size = int(params.get("data", {}).get("validation_size", 5000))
    context = Context(params, Path(datasets), Path(models))
    summaries = {}
    with atomic_directory(out) as tmp_out, atomic_directory(metrics) as tmp_metrics:
        for name in settings["models"]:
            started = time.perf_counter()
            card = context.card(name)
            entry = _model_entry(params, name)
            limit = settings["limit"]
            if isinstance(limit, Mapping):
                limit = limit.get(name)
            data, key, mode, note = _statistics_data(entry, Path(datasets), card,
                                                     validation_size, limit)
            loader = S.statistics_loader(data, int(settings["batch_size"]))
            gaps, labels = S.gather_gap(card.model, loader)
            gather_seconds = time.perf_counter() - started
            meta = {"model": card.name, "model_entry": name,
                    "statistics_set": S.STATISTICS_SETS[key], "statistics_set_key": key,
                    "layers_stored": "all convs", "seconds_gather": round(gather_seconds, 1),
                    "fallback_note": note}
            options = {"layers": None, "equal_var": bool(settings["equal_var"]),
                       "pvalue_precision": settings["pvalue_precision"],
                       "shapiro": bool(settings["shapiro"]),
                       "shapiro_max_samples": settings["shapiro_max_samples"],
                       "seed": int(settings["seed"])}
            corrected = S.statistics_from_gaps(gaps, labels, card.num_classes, mode, meta=meta,
                                               **options)
            corrected.save(tmp_out / f"{name}.pt")
            summary = S.statistics_summary(corrected, gaps, float(settings["q_for_ties"]))
            if settings["authors_bug"] and mode == "class":
                bug = S.statistics_from_gaps(gaps, labels, card.num_classes, mode,
                                             authors_stats_bug=True, meta=meta,
                                             **{**options, "shapiro": False})
                # Shapiro and GAP mean/std are per layer in the authors' code too: share them.
                for layer_name, layer in bug.layers.items():
                    layer.shapiro_p = corrected.layer(layer_name).shapiro_p
                bug.save(tmp_out / f"{name}-authors-bug.pt")
                summary["authors_bug"] = {
                    "file": f"{name}-authors-bug.pt",
                    "last_layer_copy": S.last_layer_copy(bug),
                    "source_layer": bug.meta.get("bug_source_layer")}
            summary.update(seconds_total=round(time.perf_counter() - started, 1),
                           seconds_gather=round(gather_seconds, 1), fallback_note=note)
            write_json(tmp_metrics / f"{name}.json", summary)
            summaries[name] = summary
            log.info("parchgrad statistics %s (%s, %s): %d images in %.0f s", name, key, mode,
                     summary.get("n_images", len(labels)), summary["seconds_total"])
    return summaries


# --------------------------------------------------------------------------- experiments

def run_toys(params: Mapping, *, out: Path, metrics: Path) -> dict:
    """E1 toy sums and seed sweep (C1), E7 checkerboard (C13), the variance identity (C2)."""
    started = time.perf_counter()
    settings = section(params, "toys")
    X.require(settings, "checkerboard", "variance_identity", section="parchgrad.toys")
    tables = X.toy_tables(settings)
    with atomic_directory(out) as tmp:
        for name, frame in tables.items():
            write_csv(frame, tmp / f"e1_toy_{name}.csv")
        write_csv(X.checkerboard(settings["checkerboard"]), tmp / "e7_checkerboard.csv")
        write_csv(X.variance_identity(settings["variance_identity"]),
                  tmp / "c2_variance_identity.csv")
    result = _metrics(params, "toys", started, None,
                      summary=tables["summary"].to_dict(orient="records"))
    write_json(metrics, result)
    return result


def run_vc(params: Mapping, *, datasets: Path, models: Path, statistics: Path, out: Path,
           maps: Path, metrics: Path) -> dict:
    """E2: zero pruning vs variance conservation (C4, C7)."""
    started = time.perf_counter()
    settings = section(params, "vc")
    context = Context(params, Path(datasets), Path(models), Path(statistics))
    explainer = context.explainer()
    artifacts, pairs, panels, timing = [], [], {}, {}
    for name, count in _models_of(settings).items():
        t0 = time.perf_counter()
        result = X.vc_ablation(context.card(name), context.images(name, count),
                               context.stats(name), settings, explainer=explainer)
        artifacts.append(result.artifacts)
        pairs.append(result.pairs)
        panels.update({X.panel_key(name, k): v for k, v in result.maps.items()})
        timing[name] = round(time.perf_counter() - t0, 1)
    with atomic_directory(out) as tmp:
        write_csv(pd.concat(artifacts, ignore_index=True), tmp / "e2_artifacts.csv")
        write_csv(pd.concat(pairs, ignore_index=True), tmp / "e2_pairs.csv")
    write_npz(Path(maps), panels)
    result = _metrics(params, "vc", started, context, seconds_per_model=timing)
    write_json(metrics, result)
    return result


def run_q_sweep(params: Mapping, *, datasets: Path, models: Path, statistics: Path, out: Path,
                maps: Path, metrics: Path) -> dict:
    """E0 panels and E6 channel-portion sweep (C3, C9)."""
    started = time.perf_counter()
    settings = section(params, "q_sweep")
    context = Context(params, Path(datasets), Path(models), Path(statistics))
    explainer = context.explainer()
    tables, panels, timing = [], {}, {}
    for name, count in _models_of(settings).items():
        t0 = time.perf_counter()
        result = X.channel_portion_sweep(context.card(name), context.images(name, count),
                                         context.stats(name), settings, explainer=explainer)
        tables.append(result.table)
        panels.update({X.panel_key(name, k): v for k, v in result.maps.items()})
        timing[name] = round(time.perf_counter() - t0, 1)
    table = pd.concat(tables, ignore_index=True)
    summary = X.sweep_summary(table)
    with atomic_directory(out) as tmp:
        write_csv(table, tmp / "e6_q_sweep.csv")
        write_csv(summary, tmp / "e6_q_sweep_summary.csv")
    write_npz(Path(maps), panels)
    result = _metrics(params, "q_sweep", started, context, seconds_per_model=timing)
    write_json(metrics, result)
    return result


def run_faithfulness(params: Mapping, *, datasets: Path, models: Path, statistics: Path,
                     out: Path, metrics: Path) -> dict:
    """E5: MoRF/LeRF AOPC and log-odds, Gini sparsity, bootstrap CIs, paired tests (C8)."""
    started = time.perf_counter()
    settings = section(params, "faithfulness")
    X.require(settings, "bootstrap_resamples", section="parchgrad.faithfulness")
    context = Context(params, Path(datasets), Path(models), Path(statistics))
    explainer = context.explainer()
    curves, per_image, timing = [], [], {}
    for name, count in _models_of(settings).items():
        t0 = time.perf_counter()
        result = X.faithfulness(context.card(name), context.images(name, count),
                                context.stats(name), settings, explainer=explainer)
        curves.append(result.curves)
        per_image.append(result.per_image)
        timing[name] = round(time.perf_counter() - t0, 1)
    per_image_table = pd.concat(per_image, ignore_index=True)
    resamples, seed = int(settings["bootstrap_resamples"]), int(settings["seed"])
    with atomic_directory(out) as tmp:
        write_csv(pd.concat(curves, ignore_index=True), tmp / "e5_curves.csv")
        write_csv(per_image_table, tmp / "e5_per_image.csv")
        write_csv(X.faithfulness_summary(per_image_table, resamples, seed), tmp / "e5_summary.csv")
        write_csv(X.faithfulness_comparisons(per_image_table, resamples, seed),
                  tmp / "e5_paired.csv")
    result = _metrics(params, "faithfulness", started, context, seconds_per_model=timing,
                      reduction="mean over RGB of |map| (|mean over RGB| for IG), as the authors",
                      ig_steps=settings.get("ig_steps"),
                      smoothgrad_samples=settings.get("smoothgrad_samples"))
    write_json(metrics, result)
    return result


def run_costs(params: Mapping, *, datasets: Path, models: Path, statistics: Path, out: Path,
              metrics: Path) -> dict:
    """E3: the method comparison table with passes and seconds per map (C10)."""
    started = time.perf_counter()
    settings = section(params, "costs")
    context = Context(params, Path(datasets), Path(models), Path(statistics))
    tables = [X.method_costs(context.card(name), context.images(name, count),
                             context.stats(name), settings)
              for name, count in _models_of(settings).items()]
    with atomic_directory(out) as tmp:
        write_csv(pd.concat(tables, ignore_index=True), tmp / "e3_costs.csv")
    result = _metrics(params, "costs", started, context)
    write_json(metrics, result)
    return result


def run_statistics_checks(params: Mapping, *, datasets: Path, models: Path, statistics: Path,
                          statistics_metrics: Path, out: Path, metrics: Path) -> dict:
    """C11 (Shapiro fractions per model), C12 (the authors' bug), Lite0's dead channels."""
    started = time.perf_counter()
    settings = section(params, "statistics_checks")
    X.require(settings, "bug_models", "images", section="parchgrad.statistics_checks")
    context = Context(params, Path(datasets), Path(models), Path(statistics))
    explainer = context.explainer()
    shapiro_rows = []
    for path in sorted(Path(statistics_metrics).glob("*.json")):
        summary = SUM.read_json(path)
        fraction = summary.get("shapiro_below_0.05") or {}
        shapiro_rows.append({"model": path.stem, "statistics_set": summary.get("statistics_set", ""),
                             "mode": summary.get("mode"), "n_images": summary.get("n_images"),
                             "channels": fraction.get("channels"),
                             "shapiro_below_0.05": fraction.get("count"),
                             "fraction": fraction.get("fraction")})
    selections, bug_maps, dead = [], [], []
    counts = _models_of(settings)
    for name in settings["bug_models"]:
        if name not in counts:
            raise ConfigError(f"parchgrad.statistics_checks.images has no count for {name} "
                              "(a bug model)")
        result = X.statistics_bug_effect(context.card(name), context.images(name, counts[name]),
                                         context.stats(name, ""), context.stats(name, "-authors-bug"),
                                         settings, explainer=explainer)
        selections.append(result.selection)
        bug_maps.append(result.maps)
    for name, count in counts.items():
        if context.stats(name).mode == "instance":
            dead.append(X.dead_channel_check(context.card(name), context.images(name, count),
                                             context.stats(name), settings))
    with atomic_directory(out) as tmp:
        write_csv(pd.DataFrame(shapiro_rows), tmp / "s1_shapiro.csv")
        write_csv(_concat(selections), tmp / "s1_bug_selection.csv")
        write_csv(_concat(bug_maps), tmp / "s1_bug_maps.csv")
        write_csv(_concat(dead), tmp / "s1_dead_channels.csv")
    result = _metrics(params, "statistics_checks", started, context)
    write_json(metrics, result)
    return result


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_bbox(params: Mapping, *, datasets: Path, models: Path, statistics: Path,
             archives: Path, out: Path, metrics: Path) -> dict:
    """E4: box energy (C5, C6); "not run" without the box archive or ILSVRC2012 validation."""
    started = time.perf_counter()
    settings = section(params, "bbox")
    X.require(settings, "archive", "images", section="parchgrad.bbox")
    archive = Path(archives) / settings["archive"]
    val = Path(datasets) / "ilsvrc2012_val"
    models_wanted = _models_of(settings)
    reason = ""
    if not models_wanted:
        reason = "not run: this profile explains no model with bounding boxes"
    elif not archive.exists():
        reason = f"not run: needs {settings['archive']} in {archives}/ (not redistributable)"
    elif not (val / "labels.csv").is_file():
        reason = "not run: needs the ILSVRC2012 validation images (see data/README.md)"
    if reason:
        with atomic_directory(out) as tmp:
            write_csv(pd.DataFrame(columns=BBOX_COLUMNS), tmp / "e4_bbox.csv")
            write_csv(pd.DataFrame({"status": ["not run"], "reason": [reason]}),
                      tmp / "e4_bbox_status.csv")
        result = _metrics(params, "bbox", started, None, status="not run", reason=reason)
        write_json(metrics, result)
        log.warning("parchgrad bbox: %s", reason)
        return result
    annotations = B.read_boxes(archive)
    all_rows = imagenet.read_labels(val)
    context = Context(params, Path(datasets), Path(models), Path(statistics))
    explainer = context.explainer()
    tables = [X.bbox_energy(context.card(name), context.images(name, count), context.stats(name),
                            settings, annotations, all_rows, explainer=explainer)
              for name, count in models_wanted.items()]
    with atomic_directory(out) as tmp:
        write_csv(pd.concat(tables, ignore_index=True), tmp / "e4_bbox.csv")
        write_csv(pd.DataFrame({"status": ["run"], "reason": [""]}), tmp / "e4_bbox_status.csv")
    result = _metrics(params, "bbox", started, context, status="run", reason="")
    write_json(metrics, result)
    return result


BBOX_COLUMNS = ["model", "image", "label", "hooks", "q", "vc", "pairing", "mu_in", "mu_in_w",
                "box_area_fraction"]


# --------------------------------------------------------------------------- summary, figures

def run_summary(params: Mapping, *, results: Path, statistics_metrics: Path, out: Path) -> dict:
    """C1–C13 values from the tables into one JSON (``metrics/parchgrad/claims.json``)."""
    settings = section(params, "claims")
    values = SUM.claim_values(SUM.load_results(results), SUM.load_statistics(statistics_metrics),
                              settings)
    write_json(out, values)
    return values


def run_figures(params: Mapping, *, results: Path, maps: Path, out: Path) -> list[Path]:
    """Every ParchGrad figure and table, from the tables only, into ``out``."""
    from replication.experiments.parchgrad import figures

    with atomic_directory(out) as tmp:
        written = figures.render_all(results, maps, tmp, str(params.get("profile", "")))
    return [Path(out) / p.name for p in written]


# The stage functions by the name a CLI subcommand would use (`parchgrad <name>`).
STAGES = {"statistics": run_statistics, "toys": run_toys, "vc": run_vc, "q-sweep": run_q_sweep,
          "faithfulness": run_faithfulness, "costs": run_costs,
          "statistics-checks": run_statistics_checks, "bbox": run_bbox, "summary": run_summary,
          "figures": run_figures}


STAGES: list = []  # TEMPORARY during the migration
