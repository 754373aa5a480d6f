"""Claim values of the Sanity Checks paper, derived from the experiment tables (the
`sanity_claims` stage), each ImageNet claim on every ImageNet model the profile runs.

Each function returns numbers a claim check (claims/sanity_checks.yaml) judges, with the 95%
interval of the whole statistic bootstrapped over the images it was measured on
(``stats.bootstrap_statistic``: the rows are images, the columns the (method, stage) cells the
statistic combines; a cell's value is its mean over the rows, NaNs dropped, as in the curves).
A claim combining several methods is measured on the images every one of them explained.

The paper's curves are Inception v3's 17 blocks; claims naming an Inception block are mapped to
positions that exist in every model's randomized stages S1 … Sn (output first), so the
EfficientNet-Lite models are judged at the corresponding depth:

- "third stage" (Mixed_7b) → S3; "the CAM layer's stage" (Mixed_7c) → the first stage that
  randomizes the model's CAM layer;
- "Mixed_6a" (S9 of 17, the middle) → S⌈n/2⌉;
- "Logits … Mixed_6e" (the top 5 of 17) → S1 … S_round(5n/17); the stem convolutions
  (Conv2d_4a … Conv2d_1a, the bottom 5 of 17) → the bottom round(5n/17) stages.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from replication.claims import point_verdict, read_claims
from replication.experiments.sanity_checks.data_randomization import NONZERO_METRIC
from replication.experiments.sanity_checks.model_randomization import CONVENTION
from replication.experiments.sanity_checks.settings import Bootstrap
from replication.fileio import read_table, write_json, write_table
from replication.metrics.stats import Interval, bootstrap_statistic, exact
from replication.models import ModelCard, create_model

C1_METHODS = ("input_x_gradient", "integrated_gradients")
C1_EXTENSION = ("gradient", "smoothgrad")
TOP_FRACTION = 5 / 17
Cell = tuple[str, int]  # (method, stage index)


def stage_positions(card: ModelCard, n_stages: int) -> dict[str, object]:
    """Which randomized stages stand for the paper's named blocks (module docstring)."""
    top = max(1, round(n_stages * TOP_FRACTION))
    # The CAM layer's stage is the first (from the output) whose block lies at or before the
    # CAM layer in module order: from there on the CAM layer's activations are random.
    order = {name: i for i, (name, _) in enumerate(card.model.named_modules())}
    cam_index = max(i for name, i in order.items()
                    if name == card.cam_layer or name.startswith(card.cam_layer + "."))
    cam_stage = next(i + 1 for i, (_, modules) in enumerate(card.randomization_blocks)
                     if max(order[m] for m in modules) <= cam_index)
    return {"third": 3, "cam": cam_stage, "middle": math.ceil(n_stages / 2),
            "top": list(range(1, top + 1)),
            "stem": list(range(n_stages - top + 1, n_stages + 1)), "n": n_stages}


@dataclass(frozen=True)
class Statistic:
    """A claim's statistic: ``reduce`` of the cells' means over the images, ``metric`` of the
    authors' map convention."""

    metric: str
    cells: tuple[Cell, ...]
    reduce: Callable[[np.ndarray], float]


def _column_means(rows: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # a cell with no defined value is NaN, and says so
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(rows, axis=0)


def cell_matrix(table: pd.DataFrame, metric: str, cells: Sequence[Cell]) -> np.ndarray:
    """Rows = the images every method of ``cells`` explained (a prefix of the curve images),
    columns = the cells; NaN where the metric was undefined for an image."""
    rows = table[(table["metric"] == metric) & (table["convention"] == CONVENTION)]
    explained = rows.groupby("method")["image"].nunique()
    n = min(int(explained.get(method, 0)) for method, _ in cells)
    values = rows.set_index(["method", "stage_index", "image"])["value"].sort_index()
    columns = []
    for method, stage in cells:
        column = values.loc[(method, stage)] if (method, stage) in values.index else pd.Series(dtype=float)
        columns.append(column.reindex(range(n)).to_numpy(dtype=np.float64))
    return np.column_stack(columns) if columns else np.empty((n, 0))


def measure(table: pd.DataFrame, statistic: Statistic, bootstrap: Bootstrap | None,
            seed: int) -> tuple[float, dict | None]:
    """The statistic's value on every image and, with ``bootstrap``, its interval."""
    rows = cell_matrix(table, statistic.metric, statistic.cells)

    def of(sample: np.ndarray) -> float:
        return float(statistic.reduce(_column_means(sample)))

    if bootstrap is None:
        return (of(rows) if len(rows) else float("nan")), None
    interval = bootstrap_statistic(rows, of, unit="images", n_resamples=bootstrap.n_resamples,
                                   confidence=bootstrap.confidence, seed=seed)
    return interval.value, interval.as_json()


def _entry(table, statistic, bootstrap, seed, **details) -> dict:
    value, interval = measure(table, statistic, bootstrap, seed)
    entry = {"value": value}
    if interval is not None:
        entry["value_ci"] = interval
    return {**entry, **details}


def _label(table: pd.DataFrame, index: int) -> str:
    return str(table.loc[table["stage_index"] == index, "stage"].iloc[0])


def _cell_means(table: pd.DataFrame, metric: str, methods: Sequence[str],
                stages: Sequence[int]) -> dict[str, list[float]]:
    """Each method's mean per stage (the curve values the claim reads), for the record."""
    means = _column_means(cell_matrix(table, metric, [(m, s) for m in methods for s in stages]))
    k = len(stages)
    return {m: [round(float(x), 4) for x in means[i * k:(i + 1) * k]]
            for i, m in enumerate(methods)}


def model_randomization_claims(cascading: pd.DataFrame, independent: pd.DataFrame | None,
                               card: ModelCard, bootstrap: Bootstrap | None = None,
                               seed: int = 0, ssim_null: float = 0.0) -> dict[str, dict]:
    """C1–C6 (and the Guided Backprop erratum) from one model's per-image randomization tables
    (cascading; independent or None), with intervals where ``bootstrap`` is given."""
    n = int(cascading["stage_index"].max())
    at = stage_positions(card, n)
    names = {k: (_label(cascading, v) if isinstance(v, int) else [_label(cascading, i) for i in v])
             for k, v in at.items() if k != "n"}
    claims: dict[str, dict] = {"stages": {"positions": at, "labels": names}}
    present, metrics = set(cascading["method"]), set(cascading["metric"])

    def claim(key: str, metric: str, cells, reduce, table=cascading, **details) -> None:
        claims[key] = _entry(table, Statistic(metric, tuple(cells), reduce), bootstrap, seed,
                             **details)

    def grid(methods, stages) -> list[Cell]:
        return [(m, s) for m in methods for s in stages]

    after_third, all_stages = list(range(at["third"], n + 1)), list(range(1, n + 1))
    if set(C1_METHODS) <= present:
        claim("C1", "spearman_diverging", grid(C1_METHODS, after_third), np.max,
              stages=[names["third"], "…", _label(cascading, n)],
              per_method=_cell_means(cascading, "spearman_diverging", C1_METHODS, after_third))
        claim("C2", "spearman_abs", grid(C1_METHODS, all_stages), np.min,
              per_method=_cell_means(cascading, "spearman_abs", C1_METHODS, all_stages))
        if "ssim" in metrics:
            claim("C2_ssim", "ssim", grid(C1_METHODS, all_stages),
                  lambda means: np.min(means) - ssim_null, null=ssim_null,
                  per_method=_cell_means(cascading, "ssim", C1_METHODS, all_stages))
    if set(C1_EXTENSION) <= present:
        claim("C1_extension", "spearman_diverging", grid(C1_EXTENSION, after_third), np.max,
              per_method=_cell_means(cascading, "spearman_diverging", C1_EXTENSION,
                                     after_third))
    if {"gradient", "guided_backprop"} <= present:
        _gradient_claims(claim, at, names, n, "ssim" in metrics)
    if "gradcam" in present:
        claim("C5", "spearman_abs", [("gradcam", at["cam"])], np.min, stage=names["cam"])
        claim("C5_logits_only", "spearman_abs", [("gradcam", 1)], np.min,
              stage=_label(cascading, 1))
    if independent is not None and len(independent) and "guided_backprop" in present:
        claim("C6", "spearman_abs", grid(["guided_backprop"], at["top"]), np.min,
              table=independent, stages=[_label(independent, i) for i in at["top"]])
        claim("C6_stem", "spearman_abs", grid(["guided_backprop"], at["stem"]), np.max,
              table=independent, stages=[_label(independent, i) for i in at["stem"]])
    return claims


def _gradient_claims(claim, at: dict, names: dict, n: int, ssim: bool) -> None:
    """C3 (Gradient is sensitive; below Guided Backprop) and C4 (Guided Backprop stays)."""
    def ratio(means: np.ndarray) -> float:
        return means[0] / means[1]

    claim("C3", "spearman_abs", [("gradient", n), ("gradient", 1)],
          lambda means: means[0] - means[1])
    upper = list(range(at["cam"], at["middle"] + 1))
    if upper:
        k = len(upper)
        claim("C3_vs_guided_backprop", "spearman_abs",
              [("gradient", s) for s in upper] + [("guided_backprop", s) for s in upper],
              lambda means: np.max(means[:k] - means[k:]),
              stages=[names["cam"], "…", names["middle"]])
    gbp = "guided_backprop"
    claim("C4", "spearman_abs", [(gbp, at["middle"]), (gbp, 1)], ratio, stage=names["middle"])
    if ssim:
        claim("C4_ssim", "ssim", [(gbp, at["middle"]), (gbp, 1)], ratio)
    claim("C4_drop", "spearman_abs", [(gbp, n), (gbp, 1)], ratio)
    claim("C4_pre_erratum", "spearman_abs", [(gbp, n)], np.min)


def calibration_claims(values: pd.DataFrame, bootstrap: Bootstrap | None = None,
                       seed: int = 0) -> dict[str, dict]:
    """C7: every null comparison ≈ 0 except HOG between two uniform masks (≈ 0.08), from the
    per-image calibration values (rows: images, or mask pairs)."""
    wide = values.pivot_table(index="image", columns=["comparison", "metric"], values="value",
                              sort=False, dropna=False)
    hog_uniform = [c for c in wide.columns if c == ("uniform vs uniform", "hog")]
    rest = [c for c in wide.columns if c not in hog_uniform]

    def largest(sample: np.ndarray) -> float:
        return float(np.max(np.abs(_column_means(sample))))

    def mean(sample: np.ndarray) -> float:
        return float(_column_means(sample)[0])

    rows = wide[rest].to_numpy(dtype=np.float64)
    worst = rest[int(np.nanargmax(np.abs(_column_means(rows))))]
    return {"C7": _interval_entry(rows, largest, bootstrap, seed, "images", worst=list(worst)),
            "C7_hog_uniform": _interval_entry(wide[hog_uniform].to_numpy(dtype=np.float64), mean,
                                              bootstrap, seed, "mask pairs")}


def _interval_entry(rows: np.ndarray, statistic, bootstrap: Bootstrap | None, seed: int,
                    unit: str, **details) -> dict:
    if bootstrap is None:
        return {"value": statistic(rows), **details}
    interval = bootstrap_statistic(rows, statistic, unit=unit, n_resamples=bootstrap.n_resamples,
                                   confidence=bootstrap.confidence, seed=seed)
    return {"value": interval.value, "value_ci": interval.as_json(), **details}


def ssim_null(values: pd.DataFrame) -> float:
    """C2-SSIM's null: the mean SSIM of a gradient map and a Gaussian mask (the calibration)."""
    null = values[(values["reference"] == "gradient") & (values["other"] == "gaussian")
                  & (values["metric"] == "ssim")]["value"]
    return float(null.mean()) if len(null) else 0.0


# The data-randomization claims and the pairs they read (setup name as in the tables).
PAIR_CLAIMS = (("C11", "cnn-mnist"), ("C12", "cnn-fashion_mnist"), ("C13", "mlp-mnist"),
               ("C13_fashion", "mlp-fashion_mnist"))
SPEARMAN_METRICS = ("spearman_abs", "spearman_diverging", NONZERO_METRIC)


class ImageColumns:
    """A (images × columns) matrix of data-randomization values, columns (pair, method,
    metric), read by the claim statistics through column means (NaN images skipped) and SDs."""

    def __init__(self, rows: np.ndarray, columns: Sequence[tuple[str, str, str]]):
        self.rows, self.columns = rows, list(columns)
        self.index = {c: i for i, c in enumerate(self.columns)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column is NaN
            self._means = np.nanmean(rows, axis=0) if len(rows) else np.full(len(columns), np.nan)

    def mean(self, pair: str, method: str, metric: str) -> float:
        i = self.index.get((pair, method, metric))
        return float("nan") if i is None else float(self._means[i])

    def sd(self, pair: str, method: str, metric: str) -> float:
        i = self.index.get((pair, method, metric))
        return float("nan") if i is None else float(np.nanstd(self.rows[:, i]))

    def methods(self, pair: str) -> list[str]:
        return list(dict.fromkeys(m for p, m, _ in self.columns if p == pair))

    def pairs(self) -> list[str]:
        return list(dict.fromkeys(p for p, _, _ in self.columns))


def image_matrix(tables: Mapping[str, pd.DataFrame]) -> tuple[np.ndarray, list[tuple]]:
    """The per-image Spearman values of every pair side by side: row i is test image i of each
    pair's data set (the images are the sampled units the intervals resample)."""
    frames = []
    for pair, table in tables.items():
        rows = table[table["metric"].isin(SPEARMAN_METRICS)]
        wide = rows.pivot(index="image", columns=["method", "metric"], values="value")
        wide.columns = [(pair, method, metric) for method, metric in wide.columns]
        frames.append(wide)
    if not frames:
        return np.empty((0, 0)), []
    wide = pd.concat(frames, axis=1).sort_index()
    return wide.to_numpy(dtype=np.float64), list(wide.columns)


def data_randomization_statistics(view: ImageColumns) -> dict[str, tuple[tuple[str, ...], Callable]]:
    """claim key → (the pairs it reads, its statistic of an ``ImageColumns``): every value the
    data-randomization claims judge, so that the whole statistic is bootstrapped."""
    pairs = view.pairs()
    statistics: dict[str, tuple[tuple[str, ...], Callable]] = {}
    for claim, pair in PAIR_CLAIMS:
        for method in view.methods(pair) if pair in pairs else []:
            statistics[f"{claim}.{method}"] = ((pair,), lambda v, p=pair, m=method:
                                               v.mean(p, m, "spearman_abs"))
    diverging = [(p, m) for p, m, k in view.columns if k == "spearman_diverging"]
    statistics["C14_max"] = (tuple(pairs), lambda v: max(v.mean(p, m, "spearman_diverging")
                                                         for p, m in diverging))
    statistics["C14_min"] = (tuple(pairs), lambda v: min(v.mean(p, m, "spearman_diverging")
                                                         for p, m in diverging))
    statistics["C14_sd"] = (tuple(pairs), lambda v: float(np.mean(
        [v.sd(p, m, "spearman_diverging") for p, m in diverging])))
    cnn = tuple(p for p in pairs if "gradcam" in view.methods(p))
    if cnn:
        statistics["C15_gradcam_lowest"] = (cnn, lambda v: max(_gradcam_margin(v, p) for p in cnn))
    statistics["C15_order"] = (tuple(pairs), lambda v: float(len(_order_violations(v))))
    statistics["C15_ig_vs_input_x_gradient"] = (tuple(pairs), lambda v: max(
        _ig_gap(v, p) for p in pairs))
    mnist = tuple(p for p in pairs if p.endswith("-mnist"))
    if mnist:
        statistics["C16"] = (mnist, lambda v: min(_nonzero_drops(v, mnist).values()))
    return statistics


def _abs_of(view: ImageColumns, pair: str) -> dict[str, float]:
    return {m: view.mean(pair, m, "spearman_abs") for m in view.methods(pair)}


def _gradcam_margin(view: ImageColumns, pair: str) -> float:
    abs_of = _abs_of(view, pair)
    return abs_of["gradcam"] - min(v for m, v in abs_of.items() if m != "gradcam")


def _order_violations(view: ImageColumns) -> list[str]:
    """Pairs where Gradient, SmoothGrad < Guided Backprop, Guided Grad-CAM < IG, G⊙I fails."""
    violations = []
    for pair in view.pairs():
        abs_of = _abs_of(view, pair)
        low = [abs_of[m] for m in ("gradient", "smoothgrad") if m in abs_of]
        middle = [abs_of[m] for m in ("guided_backprop", "guided_gradcam") if m in abs_of]
        high = [abs_of[m] for m in ("integrated_gradients", "input_x_gradient") if m in abs_of]
        if low and middle and high and not (max(low) < min(middle) and max(middle) < min(high)):
            violations.append(pair)
    return violations


def _ig_gap(view: ImageColumns, pair: str) -> float:
    return abs(view.mean(pair, "integrated_gradients", "spearman_abs")
               - view.mean(pair, "input_x_gradient", "spearman_abs"))


def _nonzero_drops(view: ImageColumns, pairs: Sequence[str]) -> dict[str, float]:
    return {f"{pair}/{method}": (view.mean(pair, method, "spearman_abs")
                                 - view.mean(pair, method, NONZERO_METRIC))
            for pair in pairs for method in ("integrated_gradients", "input_x_gradient")}


def widen_by_seeds(interval: Interval, per_seed: Sequence[float]) -> dict:
    """The image interval of a value measured on one trained model, widened by the spread
    between training seeds (issue 14 §4).

    The model's value differs from the training recipe's by its images (the bootstrap interval)
    and by its training seed: a single draw from the seed distribution, whose SD ``s`` is
    estimated from the S seeds' values with S − 1 degrees of freedom. Each side of the interval
    is therefore the image half-width and t(S − 1)·s combined in quadrature (the two sources are
    independent); the image part alone is kept as ``image_low``/``image_high``. With one seed
    there is no spread to add and the interval stays the images'.
    """
    values = np.asarray(per_seed, dtype=np.float64)
    result = interval.as_json()
    if len(values) < 2 or interval.low is None or interval.high is None:
        return result
    spread = float(np.std(values, ddof=1))
    margin = float(scipy_stats.t.ppf(0.5 + interval.confidence / 2, len(values) - 1) * spread)
    value = interval.value
    low = value - math.hypot(value - interval.low, margin)
    high = value + math.hypot(interval.high - value, margin)
    return {**result, "low": low, "high": high, "method": "bootstrap+seeds",
            "unit": f"images; {len(values)} training seeds", "image_low": interval.low,
            "image_high": interval.high, "seed_values": [float(v) for v in values],
            "seed_sd": spread, "seed_margin": margin}


def data_randomization_claims(tables: Mapping[str, pd.DataFrame],
                              seed_tables: Mapping[int, Mapping[str, pd.DataFrame]] | None = None,
                              *, n_resamples: int = 2000, seed: int = 0) -> dict[str, dict]:
    """C11–C16 from the per-image tables (``pair`` → rows method, metric, image, value), each
    value with its 95% interval ``value_ci``: the whole statistic bootstrapped over the test
    images, widened by the training-seed spread where ``seed_tables`` (further training seed →
    the retrained pairs' tables) retrained a pair it reads (``widen_by_seeds``)."""
    if not tables:
        return {}
    rows, columns = image_matrix(tables)
    view = ImageColumns(rows, columns)
    statistics = data_randomization_statistics(view)
    seed_views = {s: ImageColumns(*image_matrix({**tables, **retrained}))
                  for s, retrained in (seed_tables or {}).items()}
    claims: dict[str, dict] = {}
    for key, (pairs, statistic) in statistics.items():
        used = [view.index[c] for c in columns if c[0] in pairs]
        names = [columns[i] for i in used]
        interval = bootstrap_statistic(rows[:, used], lambda r, n=names: statistic(ImageColumns(r, n)),
                                       n_resamples=n_resamples, seed=seed)
        per_seed = [interval.value] + [statistic(v) for s, v in seed_views.items()
                                       if set(pairs) & set(seed_tables[s])]
        entry = {"value": interval.value, "value_ci": widen_by_seeds(interval, per_seed)}
        claim, _, method = key.partition(".")
        if method:
            claims.setdefault(claim, {})[method] = entry
        else:
            claims[key] = entry
    if "C15_gradcam_lowest" in claims:
        claims["C15_gradcam_lowest"]["per_pair"] = {p: _gradcam_margin(view, p) for p in view.pairs()
                                                    if "gradcam" in view.methods(p)}
    claims["C15_order"]["violations"] = _order_violations(view)
    claims["C15_ig_vs_input_x_gradient"]["per_pair"] = {p: _ig_gap(view, p) for p in view.pairs()}
    if "C16" in claims:
        claims["C16"]["per_pair"] = _nonzero_drops(view, [p for p in view.pairs()
                                                          if p.endswith("-mnist")])
    return claims


def data_randomization_tables(folder: Path, seeds_folder: Path) -> tuple[
        dict[str, pd.DataFrame], dict[int, dict[str, pd.DataFrame]]]:
    """The pairs' per-image tables (setup → table) and those of the pairs retrained with further
    training seeds (seed → setup → table)."""
    pairs = {path.stem: read_table(path) for path in sorted(folder.glob("*.csv"))}
    retrained: dict[int, dict[str, pd.DataFrame]] = {}
    for path in sorted(seeds_folder.glob("*.csv")):
        table = read_table(path)
        for seed, rows in table.groupby("seed", sort=True):
            retrained.setdefault(int(seed), {})[path.stem] = rows.drop(columns="seed")
    return pairs, retrained


def seed_spread_table(tables: Mapping[str, pd.DataFrame],
                      seed_tables: Mapping[int, Mapping[str, pd.DataFrame]], *,
                      n_resamples: int, seed: int) -> pd.DataFrame:
    """Per pair, method and Spearman metric: the pipeline model's mean with its image interval,
    each training seed's mean, their SD and t-margin, which spread is the larger, and the
    interval widened by both (``widen_by_seeds``): issue 14 §4's table."""
    rows = []
    for pair, table in tables.items():
        for (method, metric), group in table.groupby(["method", "metric"], sort=False):
            if metric not in ("spearman_abs", "spearman_diverging"):
                continue
            values = group.sort_values("image")["value"].to_numpy(dtype=np.float64)
            interval = bootstrap_statistic(values[:, None], _nan_mean, n_resamples=n_resamples,
                                           seed=seed)
            per_seed = [interval.value] + [
                _nan_mean(t[pair].loc[(t[pair]["method"] == method)
                                      & (t[pair]["metric"] == metric), ["value"]].to_numpy())
                for t in seed_tables.values() if pair in t]
            widened = widen_by_seeds(interval, per_seed)
            image_half = ((interval.high - interval.low) / 2 if interval.low is not None
                          else float("nan"))
            margin = widened.get("seed_margin", float("nan"))
            rows.append({"pair": pair, "method": method, "metric": metric,
                         "mean": interval.value, "image_low": interval.low,
                         "image_high": interval.high, "n_images": interval.n,
                         "seeds": len(per_seed),
                         "seed_means": " ".join(f"{v:.4f}" for v in per_seed),
                         "seed_sd": widened.get("seed_sd", float("nan")),
                         "image_half_width": image_half, "seed_margin": margin,
                         "larger": ("" if math.isnan(margin) else
                                    "seeds" if margin > image_half else "images"),
                         "low": widened["low"], "high": widened["high"]})
    return pd.DataFrame(rows)


def _nan_mean(rows: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(rows[:, 0]))


def toy_claims(edge_study: pd.DataFrame, locality: pd.DataFrame, linear: pd.DataFrame,
               bootstrap: Bootstrap | None = None, seed: int = 0) -> dict[str, dict]:
    """C17 (linear-model identities) and C18 (one-layer conv net: locality; edge-likeness).

    C17 and C18-locality are identities, exact. C18-edges is a mean over random filters, the
    unit its interval resamples (rows: filters, columns: the image scalings)."""
    relative = (linear["max_abs_difference"] / linear["scale"]).max()
    gradient = edge_study[(edge_study["method"] == "gradient")
                          & (edge_study["version"] == "grayscale")]
    random = edge_study[(edge_study["method"] == "random") & (edge_study["version"] == "grayscale")]
    merged = gradient.merge(random, on=["version", "scaling", "filter_seed"],
                            suffixes=("", "_random"))
    outside = locality[locality["region"] == "outside_5x5"]["max_abs_change"]
    gaps = (merged.assign(gap=merged["spearman_edge"] - merged["spearman_edge_random"])
            .pivot_table(index="filter_seed", columns="scaling", values="gap", sort=False))
    return {
        "C17": {"value": float(relative), "value_ci": exact(relative).as_json(),
                "per_method": dict(zip(linear["method"],
                                       (linear["max_abs_difference"] / linear["scale"]).round(12)))},
        "C18_locality": {"value": float(outside.max()),
                         "value_ci": exact(outside.max()).as_json()},
        "C18_edges": _interval_entry(gaps.to_numpy(dtype=np.float64),
                                     lambda rows: float(np.mean(rows)), bootstrap, seed,
                                     "filters",
                                     gradient_mean=float(gradient["spearman_edge"].mean()),
                                     share_above_random=float((merged["spearman_edge"]
                                                               > merged["spearman_edge_random"])
                                                              .mean())),
    }


def bn_study_verdicts(study: pd.DataFrame, card: ModelCard, claims: list) -> pd.DataFrame:
    """The model-randomization claims' point values and verdicts under every option of the
    study (a table of how the estimates move, without intervals)."""
    by_id = {c.id: c for c in claims}
    rows = []
    for (batchnorm, convention), group in study.groupby(["batchnorm", "convention"], sort=False):
        if not convention:
            continue
        table = group.drop(columns=["batchnorm"]).assign(convention=CONVENTION)
        values = model_randomization_claims(table, None, card)
        for claim_id, entry in values.items():
            if claim_id in by_id:
                rows.append({"batchnorm": batchnorm, "convention": convention, "claim": claim_id,
                             "value": entry["value"], "verdict": point_verdict(by_id[claim_id], entry["value"])})
    return pd.DataFrame(rows, columns=["batchnorm", "convention", "claim", "value", "verdict"])


# --- the stage ----------------------------------------------------------------------------------

def imagenet_claims(ctx, model: str) -> dict[str, dict]:
    """Every ImageNet claim on one model, with intervals."""
    bootstrap, seed = ctx.settings("sanity_checks.claims.bootstrap"), ctx.settings("seed")
    tables = {mode: read_table(ctx.input("randomization") / f"imagenet-{model}-{mode}.csv")
              for mode in ("cascading", "independent")}
    calibration = read_table(ctx.input("calibration") / f"{model}.csv")
    claims = model_randomization_claims(tables["cascading"], tables["independent"],
                                        create_model(model, pretrained=False), bootstrap, seed,
                                        ssim_null=ssim_null(calibration))
    claims.update(calibration_claims(calibration, bootstrap, seed))
    return claims


def per_model_claims(by_model: Mapping[str, dict[str, dict]]) -> dict[str, dict]:
    """The primary (first) model's claims, each with ``per_model``: every model's value and
    interval (or why it has none)."""
    primary, *_ = by_model
    merged: dict[str, dict] = {"stages": {m: c.pop("stages") for m, c in by_model.items()}}
    for key, entry in by_model[primary].items():
        per_model = {}
        for model, claims in by_model.items():
            found = claims.get(key)
            per_model[model] = ({k: found[k] for k in ("value", "value_ci") if k in found}
                                if found else {"reason": f"{model} did not measure {key}"})
        merged[key] = {**entry, "per_model": per_model}
    return merged


def run(ctx) -> None:
    """`sanity_claims`: every claim value of the paper from the stage tables, into one JSON
    file; and the option study's verdicts (on the primary ImageNet model)."""
    run_models = ctx.settings("sanity_checks.imagenet.run_models")
    claims = per_model_claims({model: imagenet_claims(ctx, model) for model in run_models})
    pairs, retrained = data_randomization_tables(ctx.input("data_randomization"),
                                                 ctx.input("training_seeds"))
    bootstrap, seed = ctx.settings("sanity_checks.claims.bootstrap"), ctx.settings("seed")
    claims.update(data_randomization_claims(pairs, retrained,
                                            n_resamples=bootstrap.n_resamples, seed=seed))
    write_table(seed_spread_table(pairs, retrained, n_resamples=bootstrap.n_resamples,
                                  seed=seed), ctx.output("seed_spread"))
    toys = ctx.input("toys")
    claims.update(toy_claims(read_table(toys / "edge_study.csv"),
                             read_table(toys / "locality.csv"),
                             read_table(toys / "linear_identities.csv"),
                             ctx.settings("sanity_checks.claims.bootstrap"), ctx.settings("seed")))
    claims["model"] = {"name": run_models[0], "run_models": list(run_models),
                       "profile": ctx.settings("profile")}
    write_json(ctx.output("metrics"), claims)
    write_table(bn_study_verdicts(read_table(ctx.input("bn_study")),
                                  create_model(run_models[0], pretrained=False),
                                  read_claims(ctx.input("claims"))), ctx.output("verdicts"))
