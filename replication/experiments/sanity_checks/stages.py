"""The Sanity Checks stages, declared (``replication.pipeline``): tables go to
``results/sanity_checks/`` (committed), map renderings for the galleries to ``.npz`` files (DVC
cache), summary values to ``metrics/sanity_checks/``.
"""

from __future__ import annotations

from replication.pipeline import Out, Stage

PACKAGE = "replication.experiments.sanity_checks"
RESULTS, METRICS = "results/sanity_checks", "metrics/sanity_checks"
# The paper's own ImageNet images (its 200 curve images and its demo images), every profile.
IMAGENET_DATA = {"images": "datasets/sanity_checks_imagenet"}
# The ImageNet models a profile may run (`sanity_checks.imagenet.run_models` picks from them):
# one matrix item each, so each model's outputs stand alone for DVC (a failed or re-run model
# leaves the others' outputs as they are); an item whose model the profile does not run writes
# empty outputs that say so. The offline Lite models first: they finish before Inception v3.
IMAGENET_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                   "inception_v3")
# What loading an ImageNet model for a stage reads (experiments.common.imagenet_card).
IMAGENET_MODEL = ("device", "stand_in_weights", "sanity_checks.imagenet.run_models")
MNIST = {"arch": ("cnn", "mlp"), "dataset": ("mnist", "fashion_mnist")}
MODES = {"mode": ("cascading", "independent")}
SETUP = "{arch}-{dataset}"
# The experiment tables the claims and the figures are drawn from.
TABLES = {"randomization": f"{RESULTS}/randomization",
          "data_randomization": f"{RESULTS}/data_randomization",
          "training_seeds": f"{RESULTS}/training_seeds", "toys": f"{RESULTS}/toys",
          "calibration": f"{RESULTS}/calibration"}
CLAIMS = "claims/sanity_checks.yaml"
# Beyond the paper: the paper's MPRT beside sMPRT and eMPRT (repaired_mprt.py).
REPAIRED = f"{RESULTS}/repaired_mprt"
REPAIRED_READS = ("device", "seed", "sanity_checks.target", "sanity_checks.randomization",
                  *(f"sanity_checks.repaired_mprt.{key}" for key in ("score", "maps", "smprt",
                                                                      "emprt")))


def _randomization_outs(setup: str) -> dict[str, Out]:
    return {"table": Out(f"{RESULTS}/randomization/{setup}-{{mode}}.csv", cache=False),
            "maps": Out(f"{RESULTS}/maps/{setup}-{{mode}}.npz"),
            "metrics": Out(f"{METRICS}/randomization/{setup}-{{mode}}.json", cache=False,
                           metric=True)}


def _repaired_outs(domain: str) -> dict[str, Out]:
    return {"layers": Out(f"{REPAIRED}/{domain}-layers.csv", cache=False),
            "scores": Out(f"{REPAIRED}/{domain}.csv", cache=False),
            "metrics": Out(f"{METRICS}/repaired_mprt/{domain}.json", cache=False, metric=True)}


STAGES = [
    Stage("sanity_imagenet_randomization", f"{PACKAGE}.model_randomization:run_imagenet",
          reads=("device", "stand_in_weights", "sanity_checks.target",
                 "sanity_checks.randomization", "sanity_checks.similarity.imagenet",
                 "sanity_checks.imagenet"),
          matrix={"model": IMAGENET_MODELS, **MODES}, deps=IMAGENET_DATA,
          outs=_randomization_outs("imagenet-{model}"),
          cost=f"{PACKAGE}.model_randomization:imagenet_cost",
          help="cascading or independent randomization of an ImageNet model (Fig. 1-5, 8-18)"),
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
          reads=(*IMAGENET_MODEL, "seed", "sanity_checks.target",
                 "sanity_checks.imagenet.batch_size", "sanity_checks.imagenet.methods",
                 "sanity_checks.similarity.imagenet", "sanity_checks.calibration"),
          matrix={"model": IMAGENET_MODELS}, deps=IMAGENET_DATA,
          outs={"table": Out(f"{RESULTS}/calibration/{{model}}.csv", cache=False),
                "metrics": Out(f"{METRICS}/calibration/{{model}}.json", cache=False,
                               metric=True)},
          cost=f"{PACKAGE}.calibration:cost",
          help="the null calibration of App. B, on an ImageNet model"),
    Stage("sanity_option_study", f"{PACKAGE}.option_study:run",
          reads=(*IMAGENET_MODEL, "sanity_checks.target",
                 "sanity_checks.randomization", "sanity_checks.imagenet.batch_size",
                 "sanity_checks.imagenet.methods", "sanity_checks.similarity.imagenet",
                 "sanity_checks.bn_study"),
          deps=IMAGENET_DATA,
          outs={"table": Out(f"{RESULTS}/bn_study.csv", cache=False),
                "metrics": Out(f"{METRICS}/bn_study.json", cache=False, metric=True)},
          cost=f"{PACKAGE}.option_study:cost",
          help="cascading randomization of the primary ImageNet model under each batch-norm "
               "option and map convention"),
    Stage("sanity_toys", f"{PACKAGE}.toys:run",
          reads=("seed", "sanity_checks.imagenet.run_models", "sanity_checks.toys"),
          deps={**IMAGENET_DATA, "fashion_mnist": "datasets/fashion_mnist"},
          outs={"out": Out(f"{RESULTS}/toys", cache=False),
                "maps": Out(f"{RESULTS}/maps/toys.npz")},
          help="one-layer conv net, input times random gradients, linear identities (Fig. 7, 19)"),
    Stage("sanity_repaired_mprt_mnist", f"{PACKAGE}.repaired_mprt:run_mnist",
          reads=(*REPAIRED_READS, "sanity_checks.similarity.mnist", "sanity_checks.mnist.methods",
                 "sanity_checks.repaired_mprt.mnist"),
          deps={**{dataset: f"datasets/{dataset}" for dataset in MNIST["dataset"]},
                **{f"{arch}_{dataset}": f"models/{dataset}-{arch}-true.pt"
                   for dataset in MNIST["dataset"] for arch in MNIST["arch"]}},
          outs=_repaired_outs("mnist"), cost=f"{PACKAGE}.repaired_mprt:mnist_cost",
          help="beyond the paper: the paper's MPRT, sMPRT and eMPRT on the MNIST models"),
    Stage("sanity_repaired_mprt_imagenet", f"{PACKAGE}.repaired_mprt:run_imagenet",
          reads=(*REPAIRED_READS, "stand_in_weights", "sanity_checks.similarity.imagenet",
                 "sanity_checks.imagenet.methods", "sanity_checks.repaired_mprt.imagenet"),
          deps={"sample": "datasets/imagenet_sample",
                "paper_images": "datasets/sanity_checks_imagenet"},
          outs=_repaired_outs("imagenet"), cost=f"{PACKAGE}.repaired_mprt:imagenet_cost",
          help="beyond the paper: the paper's MPRT, sMPRT and eMPRT on the ImageNet models"),
    Stage("sanity_claims", f"{PACKAGE}.claims:run",
          reads=("profile", "seed", "stand_in_weights", "sanity_checks.imagenet.run_models",
                 "sanity_checks.claims"), judges_models=True,
          deps={**TABLES, "bn_study": f"{RESULTS}/bn_study.csv", "claims": CLAIMS},
          outs={"verdicts": Out(f"{RESULTS}/bn_study_verdicts.csv", cache=False),
                "seed_spread": Out(f"{RESULTS}/seed_spread.csv", cache=False),
                "metrics": Out(f"{METRICS}/claims.json", cache=False, metric=True)},
          help="the claim values of the paper and the option study's verdicts"),
    Stage("sanity_figures", f"{PACKAGE}.figures:run",
          reads=("profile", "stand_in_weights", "sanity_checks.imagenet.run_models"),
          deps={**TABLES, "maps": f"{RESULTS}/maps",
                "verdicts": f"{RESULTS}/bn_study_verdicts.csv", "claims": CLAIMS,
                "seed_spread": f"{RESULTS}/seed_spread.csv", "repaired_mprt": REPAIRED},
          outs={"out": Out("figures/sanity_checks", cache=False)},
          help="every figure and table of the paper (figures.FIGURES)"),
]
