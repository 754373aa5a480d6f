"""The Expected Grad-CAM stages (see replication.pipeline): six experiments, the claim values
and the figures. Each experiment explains every model of ``expected_gradcam.run_models`` on the
stage's device and writes tidy tables to results/expected_gradcam/ and a summary to
metrics/expected_gradcam/; each declares what it costs (``costs.py``).
"""

from __future__ import annotations

from replication.pipeline import Out, Stage

PACKAGE = "replication.experiments.expected_gradcam"
RESULTS, METRICS = "results/expected_gradcam", "metrics/expected_gradcam"

# What every experiment loads: the ImageNet folders (the configured source), the MNIST test and
# training images and the MNIST CNN trained by the train stage.
DATA = {"imagenet_sample": "datasets/imagenet_sample", "ilsvrc2012": "datasets/ilsvrc2012_val",
        "mnist": "datasets/mnist", "mnist_checkpoint": "models/mnist-cnn-true.pt"}
# Settings every experiment reads (models, images, device, engine parameters).
COMMON = ("seed", "device", "stand_in_weights", "imagenet.source", "expected_gradcam.run_models",
          "expected_gradcam.threads", "expected_gradcam.data", "expected_gradcam.methods",
          "expected_gradcam.internal_batch_size")
# The tables the experiments write, by the name each stage gives them (the claims and the
# figures read them under the same names).
TABLES = {"scores": f"{RESULTS}/comparison_scores.csv",
          "summary": f"{RESULTS}/comparison_summary.csv",
          "panels": f"{RESULTS}/panels.npz",
          "curves": f"{RESULTS}/saturation_curves.csv",
          "alpha_star": f"{RESULTS}/saturation_alpha_star.csv",
          "topk": f"{RESULTS}/saturation_topk.csv",
          "sigma_sweep": f"{RESULTS}/sigma_sweep.csv",
          "stability": f"{RESULTS}/sample_stability.csv",
          "sigma_panels": f"{RESULTS}/sigma_panels.npz",
          "pairs": f"{RESULTS}/baseline_sensitivity.csv",
          "special_cases": f"{RESULTS}/special_cases.csv",
          "localisation": f"{RESULTS}/localisation.csv"}


def tables(*names: str) -> dict[str, Out]:
    """Outputs: committed tables (.csv) and cached arrays (.npz)."""
    return {name: Out(TABLES[name], cache=not TABLES[name].endswith(".csv")) for name in names}


def summary(name: str) -> Out:
    return Out(f"{METRICS}/{name}", cache=False, metric=True)


# The claims read the summary for each metric's direction (higher is better or not), and the
# localisation summary for why C7 did not run.
CLAIM_TABLES = ("scores", "summary", "alpha_star", "topk", "sigma_sweep", "pairs",
                "localisation", "special_cases")


def experiment(name: str, module: str, reads: tuple[str, ...], outs: dict[str, Out],
               help: str) -> Stage:
    """A stage that explains every model of ``run_models``: the common settings and data, and
    its cost function (``costs.<module>_cost``)."""
    return Stage(name, f"{PACKAGE}.{module}:run", reads=(*COMMON, *reads), deps=DATA, outs=outs,
                 help=help, cost=f"{PACKAGE}.costs:{module}_cost")


STAGES = [
    experiment("egc_comparison", "comparison",
               ("expected_gradcam.batch_size", "expected_gradcam.metric_batch_size",
                "expected_gradcam.bootstrap", "expected_gradcam.comparison"),
               {**tables("scores", "summary", "panels"), "metrics": summary("comparison.json")},
               "Exp. 1: every method × metric per image, the paired summary, panel maps"),
    experiment("egc_saturation", "saturation", ("expected_gradcam.saturation",),
               {**tables("curves", "alpha_star", "topk"), "metrics": summary("saturation.json")},
               "Exp. 2: internal saturation along the path, α*, top-k channels"),
    experiment("egc_smoothing", "smoothing",
               ("expected_gradcam.batch_size", "expected_gradcam.metric_batch_size",
                "expected_gradcam.smoothing"),
               {**tables("sigma_sweep", "stability"), "panels": Out(TABLES["sigma_panels"]),
                "metrics": summary("smoothing.json")},
               "Exp. 3: σ sweep and seed-to-seed stability against M"),
    experiment("egc_baselines", "baselines",
               ("expected_gradcam.batch_size", "expected_gradcam.baselines"),
               {**tables("pairs"), "metrics": summary("baselines.json")},
               "Exp. 4: pairwise Spearman between maps of baseline choices"),
    experiment("egc_special_cases", "special_cases", ("expected_gradcam.special_cases",),
               {**tables("special_cases"), "metrics": summary("special_cases.json")},
               "the reductions of notes §1.5 on real images, completeness gaps"),
    experiment("egc_localisation", "localisation",
               ("expected_gradcam.batch_size", "expected_gradcam.localisation"),
               {**tables("localisation"), "metrics": summary("localisation.json")},
               "C7: energy of each map in the ILSVRC2012 boxes (not run without boxes)"),
    Stage("egc_claims", f"{PACKAGE}.claims:run",
          reads=("seed", "stand_in_weights", "expected_gradcam.bootstrap",
                 "expected_gradcam.claims"), judges_models=True,
          deps={**{name: TABLES[name] for name in CLAIM_TABLES},
                "localisation_metrics": f"{METRICS}/localisation.json"},
          outs={"claims": summary("claims.json")},
          help="the values of claims C1–C9 from the tables"),
    Stage("egc_figures", f"{PACKAGE}.figures:run",
          reads=("profile", "seed", "stand_in_weights", "expected_gradcam.bootstrap",
                 "expected_gradcam.labels"),
          deps=TABLES,
          outs={"figures": Out("figures/expected_gradcam", cache=False)},
          help="every figure and table of figures/expected_gradcam/"),
]
