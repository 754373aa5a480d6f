"""The stages that are not a paper's: settings, data, training, ImageNet accuracy, the report.

Each paper declares its own in ``replication/experiments/<paper>/stages.py``; the pipeline is
``STAGES`` here, then the papers', then ``REPORT`` (``replication.pipeline.STAGE_LISTS``).
"""

from __future__ import annotations

from replication.pipeline import Out, Stage

MNIST_DATASETS = ("mnist", "fashion_mnist")

STAGES = [
    Stage("settings", "replication.config:run_settings_stage", params_file="params.yaml",
          outs={"out": Out("settings", cache=False, persist=True)},
          help="check params.yaml and write each stage's settings file"),
    Stage("idx_data", "replication.data.mnist:run_stage",
          reads=("data.network", "data.validation_size"),
          matrix={"dataset": MNIST_DATASETS},
          outs={"out": Out("datasets/{dataset}"),
                "metrics": Out("metrics/data/{dataset}.json", cache=False, metric=True)},
          help="MNIST / Fashion-MNIST: fetch, verify, summarise"),
    Stage("imagenet_sample", "replication.data.imagenet:run_sample_stage", reads=("data.network",),
          outs={"out": Out("datasets/imagenet_sample"),
                "metrics": Out("metrics/data/imagenet_sample.json", cache=False, metric=True)},
          help="the 1000-image ImageNet sample"),
    Stage("sanity_images", "replication.data.sanity_images:run_stage", reads=("data.network",),
          outs={"out": Out("datasets/sanity_checks_imagenet")},
          help="the Sanity Checks paper's 200 ImageNet images and demo images"),
    Stage("ilsvrc2012_val", "replication.data.imagenet:run_ilsvrc2012_stage",
          reads=("data.ilsvrc2012",), deps={"archives": "data"}, outs={"out": Out("datasets/ilsvrc2012_val", cache=False)},
          help="ILSVRC2012 validation from your archives in data/"),
    Stage("train", "replication.training:run_training_stage",
          reads=("seed", "device", "data.validation_size", "train"),
          matrix={"dataset": MNIST_DATASETS, "arch": ("cnn", "mlp"), "labels": ("true", "random")},
          deps={"data": "datasets/{dataset}"}, cost="replication.training:training_cost",
          outs={"checkpoint": Out("models/{dataset}-{arch}-{labels}.pt"),
                "metrics": Out("metrics/train/{dataset}-{arch}-{labels}.json", cache=False,
                               metric=True)},
          help="train one MNIST / Fashion-MNIST model (Lightning)"),
    Stage("imagenet_accuracy", "replication.evaluation:run_accuracy_stage",
          reads=("device", "stand_in_weights", "imagenet"), cost="replication.evaluation:accuracy_cost",
          deps={"sample": "datasets/imagenet_sample", "ilsvrc2012": "datasets/ilsvrc2012_val"},
          outs={"out": Out("metrics/imagenet", cache=False)},
          help="top-1 / top-5 of the ImageNet models"),
]

REPORT = [
    Stage("report", "replication.report:run_stage", params_file="params.yaml",
          deps={"claims": "claims", "metrics": "metrics"},
          outs={"markdown": Out("reports/replication.md", cache=False),
                "json": Out("reports/claims.json", cache=False)},
          help="the verdict of every claim: reports/replication.md"),
]
