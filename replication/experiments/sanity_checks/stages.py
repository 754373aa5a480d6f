"""The Sanity Checks stages, declared (``replication.pipeline``): tables go to
``results/sanity_checks/`` (committed), map renderings for the galleries to ``.npz`` files (DVC
cache), summary values to ``metrics/sanity_checks/``.
"""

from __future__ import annotations

from replication.pipeline import Out, Stage

PACKAGE = "replication.experiments.sanity_checks"
RESULTS, METRICS = "results/sanity_checks", "metrics/sanity_checks"
IMAGENET_DATA = {"sample": "datasets/imagenet_sample", "ilsvrc2012": "datasets/ilsvrc2012_val"}
# What the ImageNet image set is made of (setups.imagenet_images).
IMAGENET_IMAGES = ("seed", "imagenet.source", "sanity_checks.imagenet.model",
                   "sanity_checks.imagenet.gallery", "sanity_checks.imagenet.classes",
                   "sanity_checks.imagenet.per_class")
MNIST = {"arch": ("cnn", "mlp"), "dataset": ("mnist", "fashion_mnist")}
MODES = {"mode": ("cascading", "independent")}
SETUP = "{arch}-{dataset}"
# The experiment tables the claims and the figures are drawn from.
TABLES = {"randomization": f"{RESULTS}/randomization",
          "data_randomization": f"{RESULTS}/data_randomization",
          "training_seeds": f"{RESULTS}/training_seeds", "toys": f"{RESULTS}/toys",
          "calibration": f"{RESULTS}/calibration.csv"}
CLAIMS = "claims/sanity_checks.yaml"


def _randomization_outs(setup: str) -> dict[str, Out]:
    return {"table": Out(f"{RESULTS}/randomization/{setup}-{{mode}}.csv", cache=False),
            "maps": Out(f"{RESULTS}/maps/{setup}-{{mode}}.npz"),
            "metrics": Out(f"{METRICS}/randomization/{setup}-{{mode}}.json", cache=False,
                           metric=True)}


STAGES = [
    Stage("sanity_imagenet_randomization", f"{PACKAGE}.model_randomization:run_imagenet",
          reads=("device", "seed", "imagenet.source", "sanity_checks.target",
                 "sanity_checks.randomization", "sanity_checks.similarity.imagenet",
                 "sanity_checks.imagenet"),
          matrix=MODES, deps=IMAGENET_DATA, outs=_randomization_outs("imagenet"),
          help="cascading or independent randomization of the ImageNet model (Fig. 1-5, 8-18)"),
    Stage("sanity_mnist_randomization", f"{PACKAGE}.model_randomization:run_mnist",
          reads=("device", "sanity_checks.target", "sanity_checks.randomization",
                 "sanity_checks.similarity.mnist", "sanity_checks.mnist"),
          matrix={**MNIST, **MODES},
          deps={"data": "datasets/{dataset}", "model": "models/{dataset}-{arch}-true.pt"},
          outs=_randomization_outs(SETUP),
          help="cascading or independent randomization of an MNIST model (Fig. 4, 20, 21, 26-35)"),
    Stage("sanity_data_randomization", f"{PACKAGE}.data_randomization:run",
          reads=("device", "data.validation_size", "sanity_checks.target",
                 "sanity_checks.similarity.mnist", "sanity_checks.mnist.methods",
                 "sanity_checks.data_randomization"),
          matrix=MNIST,
          deps={"data": "datasets/{dataset}", "true_model": "models/{dataset}-{arch}-true.pt",
                "random_model": "models/{dataset}-{arch}-random.pt"},
          outs={"table": Out(f"{RESULTS}/data_randomization/{SETUP}.csv", cache=False),
                "maps": Out(f"{RESULTS}/maps/{SETUP}-data.npz"),
                "metrics": Out(f"{METRICS}/data_randomization/{SETUP}.json", cache=False,
                               metric=True)},
          help="true-label vs permuted-label model of an MNIST setup (Fig. 6, 22-25)"),
    Stage("sanity_training_seeds", f"{PACKAGE}.data_randomization:run_training_seeds",
          reads=("device", "seed", "data.validation_size", "train", "sanity_checks.target",
                 "sanity_checks.similarity.mnist", "sanity_checks.mnist.methods",
                 "sanity_checks.data_randomization", "sanity_checks.training_seeds"),
          matrix=MNIST, deps={"data": "datasets/{dataset}"},
          cost="replication.experiments.sanity_checks.data_randomization:training_seeds_cost",
          outs={"table": Out(f"{RESULTS}/training_seeds/{SETUP}.csv", cache=False),
                "metrics": Out(f"{METRICS}/training_seeds/{SETUP}.json", cache=False,
                               metric=True)},
          help="the data-randomization pairs retrained with more training seeds (issue 14 §4)"),
    Stage("sanity_calibration", f"{PACKAGE}.calibration:run",
          reads=("device", *IMAGENET_IMAGES, "sanity_checks.target",
                 "sanity_checks.imagenet.batch_size", "sanity_checks.imagenet.methods",
                 "sanity_checks.similarity.imagenet", "sanity_checks.calibration"),
          deps=IMAGENET_DATA,
          outs={"table": Out(f"{RESULTS}/calibration.csv", cache=False)},
          help="the null calibration of App. B"),
    Stage("sanity_option_study", f"{PACKAGE}.option_study:run",
          reads=("device", *IMAGENET_IMAGES, "sanity_checks.target",
                 "sanity_checks.randomization", "sanity_checks.imagenet.batch_size",
                 "sanity_checks.imagenet.methods", "sanity_checks.similarity.imagenet",
                 "sanity_checks.bn_study"),
          deps=IMAGENET_DATA,
          outs={"table": Out(f"{RESULTS}/bn_study.csv", cache=False)},
          help="cascading randomization under each batch-norm option and map convention"),
    Stage("sanity_toys", f"{PACKAGE}.toys:run",
          reads=(*IMAGENET_IMAGES, "sanity_checks.toys"),
          deps={**IMAGENET_DATA, "fashion_mnist": "datasets/fashion_mnist"},
          outs={"out": Out(f"{RESULTS}/toys", cache=False),
                "maps": Out(f"{RESULTS}/maps/toys.npz")},
          help="one-layer conv net, input times random gradients, linear identities (Fig. 7, 19)"),
    Stage("sanity_claims", f"{PACKAGE}.claims:run",
          reads=("profile", "seed", "sanity_checks.imagenet.model",
                 "sanity_checks.bootstrap_resamples"),
          deps={**TABLES, "bn_study": f"{RESULTS}/bn_study.csv", "claims": CLAIMS},
          outs={"verdicts": Out(f"{RESULTS}/bn_study_verdicts.csv", cache=False),
                "seed_spread": Out(f"{RESULTS}/seed_spread.csv", cache=False),
                "metrics": Out(f"{METRICS}/claims.json", cache=False, metric=True)},
          help="the claim values of the paper and the option study's verdicts"),
    Stage("sanity_figures", f"{PACKAGE}.figures:run",
          reads=("profile", "sanity_checks.imagenet.model"),
          deps={**TABLES, "maps": f"{RESULTS}/maps",
                "verdicts": f"{RESULTS}/bn_study_verdicts.csv",
                "seed_spread": f"{RESULTS}/seed_spread.csv", "claims": CLAIMS},
          outs={"out": Out("figures/sanity_checks", cache=False)},
          help="every figure and table of the paper (figures.FIGURES)"),
]
