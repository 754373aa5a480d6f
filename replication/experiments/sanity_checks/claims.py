"""Claim values of the Sanity Checks paper, derived from the experiment tables (the
`sanity_claims` stage).

Each function returns numbers a claim check (claims/sanity_checks.yaml) judges. The paper's
curves are Inception v3's 17 blocks; claims naming an Inception block are mapped to positions
that exist in every model's randomized stages S1 … Sn (output first), so the quick profile's
EfficientNet-Lite0 is judged at the corresponding depth:

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
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from replication.claims import point_verdict, read_claims
from replication.experiments.sanity_checks.data_randomization import NONZERO_METRIC
from replication.experiments.sanity_checks.model_randomization import CONVENTION, summarize_table
from replication.fileio import read_table, write_json, write_table
from replication.metrics.stats import Interval, bootstrap_statistic
from replication.models import ModelCard, create_model

C1_METHODS = ("input_x_gradient", "integrated_gradients")
C1_EXTENSION = ("gradient", "smoothgrad")
TOP_FRACTION = 5 / 17


def _mean(summary: pd.DataFrame, mode: str, method: str, metric: str) -> pd.Series:
    """Mean over images per randomized stage (S1 … Sn, in order), indexed by stage index."""
    rows = summary[(summary["mode"] == mode) & (summary["method"] == method)
                   & (summary["metric"] == metric) & (summary["stage_index"] > 0)]
    return rows.set_index("stage_index")["mean"].sort_index()


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


def _label(summary: pd.DataFrame, index: int) -> str:
    return str(summary.loc[summary["stage_index"] == index, "stage"].iloc[0])


def model_randomization_claims(cascading: pd.DataFrame, independent: pd.DataFrame | None,
                               card: ModelCard) -> dict[str, dict]:
    """C1–C6 (and the Guided Backprop erratum) from the summarized randomization tables."""
    n = int(cascading["stage_index"].max())
    at = stage_positions(card, n)
    names = {k: (_label(cascading, v) if isinstance(v, int) else [_label(cascading, i) for i in v])
             for k, v in at.items() if k != "n"}
    claims: dict[str, dict] = {"stages": {"positions": at, "labels": names}}

    present = set(cascading["method"])
    metrics = set(cascading["metric"])

    def worst(methods, metric, stages, reducer):
        values = {m: _mean(cascading, "cascading", m, metric).loc[stages] for m in methods}
        value = reducer(reducer(v) for v in values.values())
        return float(value), {m: [round(float(x), 4) for x in v] for m, v in values.items()}

    def available(*methods: str) -> bool:
        return set(methods) <= present

    after_third = list(range(at["third"], n + 1))
    all_stages = list(range(1, n + 1))
    if available(*C1_METHODS):
        value, detail = worst(C1_METHODS, "spearman_diverging", after_third, max)
        claims["C1"] = {"value": value, "stages": [names["third"], "…", _label(cascading, n)],
                        "per_method": detail}
        value, detail = worst(C1_METHODS, "spearman_abs", all_stages, min)
        claims["C2"] = {"value": value, "per_method": detail}
        if "ssim" in metrics:
            value, detail = worst(C1_METHODS, "ssim", all_stages, min)
            claims["C2_ssim"] = {"value": value, "per_method": detail}
    if available(*C1_EXTENSION):
        value, detail = worst(C1_EXTENSION, "spearman_diverging", after_third, max)
        claims["C1_extension"] = {"value": value, "per_method": detail}
    if available("gradient", "guided_backprop"):
        gradient = _mean(cascading, "cascading", "gradient", "spearman_abs")
        guided = _mean(cascading, "cascading", "guided_backprop", "spearman_abs")
        claims["C3"] = {"value": float(gradient.loc[n] - gradient.loc[1]),
                        "first": float(gradient.loc[1]), "last": float(gradient.loc[n])}
        upper = list(range(at["cam"], at["middle"] + 1))
        if upper:
            claims["C3_vs_guided_backprop"] = {
                "value": float((gradient.loc[upper] - guided.loc[upper]).max()),
                "stages": [names["cam"], "…", names["middle"]]}
        claims["C4"] = {"value": float(guided.loc[at["middle"]] / guided.loc[1]),
                        "first": float(guided.loc[1]), "middle": float(guided.loc[at["middle"]]),
                        "stage": names["middle"]}
        if "ssim" in metrics:
            guided_ssim = _mean(cascading, "cascading", "guided_backprop", "ssim")
            claims["C4_ssim"] = {"value": float(guided_ssim.loc[at["middle"]] / guided_ssim.loc[1])}
        claims["C4_drop"] = {"value": float(guided.loc[n] / guided.loc[1]),
                             "last": float(guided.loc[n])}
        claims["C4_pre_erratum"] = {"value": float(guided.loc[n]), "stage": _label(cascading, n)}
    if available("gradcam"):
        gradcam = _mean(cascading, "cascading", "gradcam", "spearman_abs")
        claims["C5"] = {"value": float(gradcam.loc[at["cam"]]), "stage": names["cam"]}
        claims["C5_logits_only"] = {"value": float(gradcam.loc[1]), "stage": _label(cascading, 1)}
    if independent is not None and len(independent) and available("guided_backprop"):
        independent_gbp = _mean(independent, "independent", "guided_backprop", "spearman_abs")
        claims["C6"] = {"value": float(independent_gbp.loc[at["top"]].min()),
                        "stages": [_label(independent, i) for i in at["top"]]}
        claims["C6_stem"] = {"value": float(independent_gbp.loc[at["stem"]].max()),
                             "stages": [_label(independent, i) for i in at["stem"]]}
    return claims


def calibration_claims(calibration: pd.DataFrame) -> dict[str, dict]:
    """C7: every null comparison ≈ 0 except HOG between two uniform masks (≈ 0.08)."""
    hog_uniform = (calibration["reference"] == "uniform") & (calibration["metric"] == "hog")
    rest = calibration[~hog_uniform]
    return {"C7": {"value": float(rest["mean"].abs().max()),
                   "worst": rest.loc[rest["mean"].abs().idxmax(), ["comparison", "metric"]].tolist()},
            "C7_hog_uniform": {"value": float(calibration.loc[hog_uniform, "mean"].mean())}}


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


def toy_claims(edge_study: pd.DataFrame, locality: pd.DataFrame,
               linear: pd.DataFrame) -> dict[str, dict]:
    """C17 (linear-model identities) and C18 (one-layer conv net: locality; edge-likeness)."""
    relative = (linear["max_abs_difference"] / linear["scale"]).max()
    gradient = edge_study[(edge_study["method"] == "gradient")
                          & (edge_study["version"] == "grayscale")]
    random = edge_study[(edge_study["method"] == "random") & (edge_study["version"] == "grayscale")]
    merged = gradient.merge(random, on=["version", "scaling", "filter_seed"],
                            suffixes=("", "_random"))
    outside = locality[locality["region"] == "outside_5x5"]["max_abs_change"]
    return {
        "C17": {"value": float(relative), "per_method": dict(zip(
            linear["method"], (linear["max_abs_difference"] / linear["scale"]).round(12)))},
        "C18_locality": {"value": float(outside.max())},
        "C18_edges": {"value": float((merged["spearman_edge"] - merged["spearman_edge_random"]).mean()),
                      "gradient_mean": float(gradient["spearman_edge"].mean()),
                      "share_above_random": float((merged["spearman_edge"]
                                                   > merged["spearman_edge_random"]).mean())},
    }


def bn_study_verdicts(study: pd.DataFrame, card: ModelCard, claims: list) -> pd.DataFrame:
    """The model-randomization claims' values and verdicts under every option of the study."""
    by_id = {c.id: c for c in claims}
    rows = []
    for (batchnorm, convention), group in study.groupby(["batchnorm", "convention"], sort=False):
        if not convention:
            continue
        summary = summarize_table(group.drop(columns=["batchnorm", "setup"], errors="ignore"))
        values = model_randomization_claims(summary, None, card)
        for claim_id, entry in values.items():
            if claim_id in by_id:
                rows.append({"batchnorm": batchnorm, "convention": convention, "claim": claim_id,
                             "value": entry["value"], "verdict": point_verdict(by_id[claim_id], entry["value"])})
    return pd.DataFrame(rows, columns=["batchnorm", "convention", "claim", "value", "verdict"])


def run(ctx) -> None:
    """`sanity_claims`: every claim value of the paper from the stage tables, into one JSON
    file; and the option study's verdicts."""
    model = ctx.settings("sanity_checks.imagenet.model")
    card = create_model(model, pretrained=False)
    randomization = ctx.input("randomization")
    summarized = {mode: summarize_table(read_table(randomization / f"imagenet-{mode}.csv")
                                        .drop(columns="setup"))
                  for mode in ("cascading", "independent")}
    claims = model_randomization_claims(
        *(t[t["convention"].isin([CONVENTION, np.nan])] for t in summarized.values()), card)
    calibration = read_table(ctx.input("calibration"))
    claims.update(calibration_claims(calibration))
    if "C2_ssim" in claims:  # "above the null": our own null, the gradient map vs a Gaussian mask
        null = calibration[(calibration["reference"] == "gradient")
                           & (calibration["other"] == "gaussian")
                           & (calibration["metric"] == "ssim")]["mean"]
        claims["C2_ssim"]["null"] = float(null.iloc[0]) if len(null) else None
        claims["C2_ssim"]["value"] -= claims["C2_ssim"]["null"] or 0.0
    pairs, retrained = data_randomization_tables(ctx.input("data_randomization"),
                                                 ctx.input("training_seeds"))
    resamples, seed = ctx.settings("sanity_checks.bootstrap_resamples"), ctx.settings("seed")
    claims.update(data_randomization_claims(pairs, retrained, n_resamples=resamples, seed=seed))
    write_table(seed_spread_table(pairs, retrained, n_resamples=resamples, seed=seed),
                ctx.output("seed_spread"))
    toys = ctx.input("toys")
    claims.update(toy_claims(read_table(toys / "edge_study.csv"),
                             read_table(toys / "locality.csv"),
                             read_table(toys / "linear_identities.csv")))
    claims["model"] = {"name": model, "profile": ctx.settings("profile")}
    write_json(ctx.output("metrics"), claims)
    write_table(bn_study_verdicts(read_table(ctx.input("bn_study")), card,
                                  read_claims(ctx.input("claims"))), ctx.output("verdicts"))
