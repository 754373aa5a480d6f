"""A hypothesis about the paper's data-randomization bars (issue 15 §3): Spearman on 28×28 maps.

The paper's no-ABS bars (true- vs permuted-label models) all lie in [−0.02, 0.20] with error
bars of ±0.25–0.45, while the flattened Spearman of our maps gives 0.5–0.8 for Guided Backprop.
``scipy.stats.spearmanr(A, B)`` with two un-flattened 28×28 maps does not correlate the maps: it
treats each of the 56 columns as a variable (28 observations each) and returns a 56×56 matrix.
No published code of the authors does this; this script tests whether some scalar read from that
matrix reproduces the published bars, ABS and no-ABS alike (a reading must match both):

- ``flat``: Spearman of the flattened maps (the authors' published recipe, ours);
- ``columns_diagonal``: the mean over j of ρ(column j of A, column j of B);
- ``columns_cross``: the mean of the whole A-versus-B block (every column of A against every
  column of B);
- ``columns_all``: the mean of the whole 56×56 matrix (within-map blocks and diagonal included).

(scipy of 2018: constant columns give NaN entries; scipy ≥ 1.9 returns one NaN for the call.)

NaN entries (constant columns: the all-zero border of IG and Gradient⊙Input) are skipped. Maps
are |E|/max|E| (ABS) and E/max|E| (no ABS) of the pipeline's checkpoints (models/), each model
explaining its own top class, on the first test images (the authors' demo batch: 20).

    python benchmarks/spearman_columns.py   # writes benchmarks/results/spearman_columns.{csv,md}
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replication.attribution import postprocess  # noqa: E402
from replication.config import load_params  # noqa: E402
from replication.experiments.common import Explainer, mnist_set, trained_mnist_model  # noqa: E402
from replication.experiments.sanity_checks.settings import SanityChecks  # noqa: E402
from replication.experiments.sanity_checks.setups import methods_for  # noqa: E402
from replication.randomization.reinit import explained_classes  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# The paper's bars (notes §7.3, read from the figures, ±0.02): (ABS, no ABS).
PAPER = {
    "cnn-mnist": {"gradient": (0.17, 0.10), "smoothgrad": (0.25, 0.11),
                  "guided_backprop": (0.57, 0.13), "gradcam": (0.03, 0.02),
                  "guided_gradcam": (0.57, 0.13), "integrated_gradients": (0.99, 0.14),
                  "ig_smoothgrad": (0.46, 0.13), "input_x_gradient": (0.99, 0.14)},
    "mlp-mnist": {"gradient": (0.61, 0.12), "smoothgrad": (0.60, 0.12),
                  "guided_backprop": (0.70, 0.20), "integrated_gradients": (0.995, 0.10),
                  "ig_smoothgrad": (0.80, 0.07), "input_x_gradient": (0.995, 0.10)},
    "cnn-fashion_mnist": {"gradient": (0.07, 0.03), "smoothgrad": (0.09, 0.04),
                          "guided_backprop": (0.56, 0.08), "gradcam": (-0.06, 0.08),
                          "guided_gradcam": (0.56, 0.08), "integrated_gradients": (0.89, 0.06),
                          "ig_smoothgrad": (0.55, 0.06), "input_x_gradient": (0.89, 0.03)},
    "mlp-fashion_mnist": {"gradient": (0.16, 0.01), "smoothgrad": (0.16, -0.02),
                          "guided_backprop": (0.28, 0.17), "integrated_gradients": (0.89, -0.02),
                          "ig_smoothgrad": (0.67, 0.00), "input_x_gradient": (0.89, 0.00)},
}
READINGS = ("flat", "columns_diagonal", "columns_cross", "columns_all")


def columns_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``scipy.stats.spearmanr(a, b)`` of two 2-D arrays as the scipy of 2018 computed it: the
    columns of both, side by side, ranked and correlated (56×56), a constant column giving NaN
    entries (scipy ≥ 1.9 returns a single NaN for the whole call instead)."""
    ranks = np.apply_along_axis(stats.rankdata, 0, np.column_stack((a, b)))
    return np.corrcoef(ranks, rowvar=False)


def readings(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Every scalar reading of one pair of 28×28 maps."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        flat = stats.spearmanr(a.ravel(), b.ravel()).statistic
        matrix = columns_spearman(a, b)
    n = a.shape[1]
    cross = matrix[:n, n:]
    return {"flat": float(flat), "columns_diagonal": float(np.nanmean(np.diag(cross))),
            "columns_cross": float(np.nanmean(cross)), "columns_all": float(np.nanmean(matrix))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--models", default=str(ROOT / "models"))
    parser.add_argument("--pairs", default=",".join(PAPER),
                        help=f"comma-separated, of {', '.join(PAPER)} (default: all)")
    parser.add_argument("--note", default="", help="a line written under the title "
                        "(where the checkpoints came from)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = load_params(ROOT / "params.yaml", "quick")
    settings = SanityChecks.from_params(params["sanity_checks"], "sanity_checks")
    explainer = Explainer("cpu", 16)
    rows = []
    for pair in args.pairs.split(","):
        if pair not in PAPER:
            raise SystemExit(f"unknown pair {pair!r}; choose from {', '.join(PAPER)}")
        arch, dataset = pair.split("-")
        images = mnist_set(ROOT / "datasets" / dataset, args.images)
        cards = {labels: trained_mnist_model(Path(args.models) / f"{dataset}-{arch}-{labels}.pt",
                                             arch) for labels in ("true", "random")}
        targets = {labels: explained_classes(card.model, images.images, "predicted")
                   for labels, card in cards.items()}
        for method, params_ in methods_for(arch, dict(settings.mnist.methods)).items():
            maps = {labels: explainer(card, method, params_, images.images, targets[labels])
                    for labels, card in cards.items()}
            for style, render in (("abs", postprocess.grayscale),
                                  ("no_abs", postprocess.diverging)):
                a, b = (render(maps[labels], None)[:, 0].numpy() for labels in ("true", "random"))
                values = pd.DataFrame([readings(x, y) for x, y in zip(a, b)])
                paper = PAPER[pair][method][0 if style == "abs" else 1]
                row = {"pair": pair, "method": method, "style": style, "paper": paper}
                for reading in READINGS:
                    row[reading] = values[reading].mean()
                    row[f"{reading}_sd"] = values[reading].std(ddof=0)
                rows.append(row)
        print(pd.DataFrame(rows).tail(12).round(3).to_string(), flush=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(RESULTS / "spearman_columns.csv", index=False, float_format="%.6g")
    errors = pd.DataFrame({reading: [(frame.loc[frame["style"] == s, reading]
                                      - frame.loc[frame["style"] == s, "paper"]).abs().mean()
                                     for s in ("abs", "no_abs")] for reading in READINGS},
                          index=["mean |ours − paper|, ABS", "mean |ours − paper|, no ABS"])
    (RESULTS / "spearman_columns.md").write_text(
        "# Hypothesis: the paper's bars from spearmanr on un-flattened 28×28 maps "
        "(benchmarks/spearman_columns.py)\n\n"
        f"Pairs: {args.pairs}. First {args.images} test images; the pipeline's checkpoints; "
        "mean (and SD over images) of each reading beside the paper's bar. A reading explains "
        "the bars only if it matches both the ABS and the no-ABS rows.\n\n"
        + (f"{args.note}\n\n" if args.note else "")
        + errors.to_markdown(floatfmt=".3f") + "\n\n"
        + frame.to_markdown(index=False, floatfmt=".3f") + "\n")


if __name__ == "__main__":
    main()
