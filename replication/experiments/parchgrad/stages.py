"""The ParchGrad stages: one per experiment, then the claims and the figures (notes §2.9).

Each stage's function is ``run(ctx)`` in its experiment's module. The experiment stages load
the models of the ``parchgrad.models`` catalogue (the trained MNIST checkpoints are inputs
named after their catalogue entry), the prepared datasets and the channel statistics.
"""

from __future__ import annotations

from replication.pipeline import Out, Stage

PACKAGE = "replication.experiments.parchgrad"
RESULTS = "results/parchgrad"
METRICS = "metrics/parchgrad"
DATA = {"mnist": "datasets/mnist", "fashion_mnist": "datasets/fashion_mnist",
        "imagenet_sample": "datasets/imagenet_sample",
        "ilsvrc2012_val": "datasets/ilsvrc2012_val",
        "mnist_cnn": "models/mnist-cnn-true.pt",
        "fashion_mnist_cnn": "models/fashion_mnist-cnn-true.pt"}
EXPERIMENT_DATA = {**DATA, "statistics": "models/parchgrad"}
# What every experiment reads to load its models, images and statistics and run ParchGrad; and
# those that explain images through the engine's batch loop.
LOADING = ("profile", "seed", "device", "stand_in_weights", "imagenet.source", "parchgrad.models",
           "parchgrad.statistics_variant", "parchgrad.shapiro_threshold", "parchgrad.spatial_1x1")
EXPLAINING = (*LOADING, "parchgrad.explainer")
# The result folders of the experiments (the claims and figures read them).
RESULT_FOLDERS = {"toys": f"{RESULTS}/toys", "vc": f"{RESULTS}/vc",
                  "q_sweep": f"{RESULTS}/q-sweep", "faithfulness": f"{RESULTS}/faithfulness",
                  "costs": f"{RESULTS}/costs",
                  "statistics_checks": f"{RESULTS}/statistics_checks",
                  "bbox": f"{RESULTS}/bbox"}


def _results(name: str) -> Out:
    return Out(RESULT_FOLDERS[name], cache=False)


def _metrics(name: str) -> Out:
    return Out(f"{METRICS}/{name}.json", cache=False, metric=True)


STAGES = [
    Stage("parchgrad_statistics", f"{PACKAGE}.statistics:run",
          reads=("seed", "device", "stand_in_weights", "data.validation_size", "parchgrad.models",
                 "parchgrad.statistics"),
          deps=DATA, cost=f"{PACKAGE}.statistics:cost",
          outs={"out": Out("models/parchgrad"),
                "metrics": Out(f"{METRICS}/statistics", cache=False)},
          help="ParchGrad channel statistics (class-wise t-tests, Shapiro–Wilk) per model"),
    Stage("parchgrad_toys", f"{PACKAGE}.toys:run", reads=("profile", "parchgrad.toys"),
          outs={"out": _results("toys"), "metrics": _metrics("toys")},
          help="E1 toy sums (C1), E7 checkerboard (C13), the variance identity (C2)"),
    Stage("parchgrad_vc", f"{PACKAGE}.vc:run", reads=(*EXPLAINING, "parchgrad.vc"),
          deps=EXPERIMENT_DATA, cost=f"{PACKAGE}.vc:cost",
          outs={"out": _results("vc"), "maps": Out(f"{RESULTS}/maps/vc.npz"),
                "metrics": _metrics("vc")},
          help="E2: zero pruning vs variance conservation (C4, C7)"),
    Stage("parchgrad_q_sweep", f"{PACKAGE}.q_sweep:run", reads=(*EXPLAINING, "parchgrad.q_sweep"),
          deps=EXPERIMENT_DATA, cost=f"{PACKAGE}.q_sweep:cost",
          outs={"out": _results("q_sweep"), "maps": Out(f"{RESULTS}/maps/q-sweep.npz"),
                "metrics": _metrics("q-sweep")},
          help="E0 panels and E6 channel-portion sweep (C3, C9)"),
    Stage("parchgrad_faithfulness", f"{PACKAGE}.faithfulness:run",
          reads=(*EXPLAINING, "parchgrad.faithfulness"), deps=EXPERIMENT_DATA,
          cost=f"{PACKAGE}.faithfulness:cost",
          outs={"out": _results("faithfulness"), "metrics": _metrics("faithfulness")},
          help="E5: pixel removal, Gini sparsity, paired comparisons (C8)"),
    Stage("parchgrad_costs", f"{PACKAGE}.costs:run", reads=(*LOADING, "parchgrad.costs"),
          deps=EXPERIMENT_DATA, cost=f"{PACKAGE}.costs:cost",
          outs={"out": _results("costs"), "metrics": _metrics("costs")},
          help="E3: the method comparison table with passes and seconds per map (C10)"),
    Stage("parchgrad_statistics_checks", f"{PACKAGE}.statistics_checks:run",
          reads=(*EXPLAINING, "parchgrad.statistics_checks"),
          deps={**EXPERIMENT_DATA, "statistics_metrics": f"{METRICS}/statistics"},
          cost=f"{PACKAGE}.statistics_checks:cost",
          outs={"out": _results("statistics_checks"), "metrics": _metrics("statistics_checks")},
          help="C11 Shapiro fractions, C12 the authors' statistics bug, dead channels"),
    # The boxes are datasets/ilsvrc2012_val/boxes.csv (the ilsvrc2012_val stage prepares them
    # from the box archive in data/): the validation folder is the dependency.
    Stage("parchgrad_bbox", f"{PACKAGE}.bbox:run", reads=(*EXPLAINING, "parchgrad.bbox"),
          deps=EXPERIMENT_DATA, cost=f"{PACKAGE}.bbox:cost",
          outs={"out": _results("bbox"), "metrics": _metrics("bbox")},
          help="E4: box energy (C5, C6); needs ILSVRC2012 validation and its boxes"),
    # The claims read which models explain ImageNet images and whether the ILSVRC2012 folder
    # was prepared, to say when an ImageNet claim fell back to the sample.
    Stage("parchgrad_claims", f"{PACKAGE}.claims:run",
          reads=("seed", "stand_in_weights", "imagenet.source", "parchgrad.models",
                 "parchgrad.claims"), judges_models=True,
          deps={**RESULT_FOLDERS, "statistics_metrics": f"{METRICS}/statistics",
                "imagenet_sample": DATA["imagenet_sample"],
                "ilsvrc2012_val": DATA["ilsvrc2012_val"]},
          outs={"out": Out(f"{METRICS}/claims.json", cache=False, metric=True)},
          help="the ParchGrad claim values C1–C13"),
    Stage("parchgrad_figures", f"{PACKAGE}.figures:run", reads=("profile", "stand_in_weights"),
          deps={**RESULT_FOLDERS, "vc_maps": f"{RESULTS}/maps/vc.npz",
                "q_sweep_maps": f"{RESULTS}/maps/q-sweep.npz"},
          outs={"out": Out("figures/parchgrad", cache=False)},
          help="every ParchGrad figure and table"),
]
