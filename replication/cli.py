"""``python -m replication <command>``: the small commands the DVC stages run.

Each command reads params.yaml, calls library functions and writes its outputs atomically.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from replication import config
from replication.data import imagenet, mnist
from replication.data.fetch import Network, mirror_root
from replication.errors import ConfigError, ReplicationError
from replication.fileio import write_json

log = logging.getLogger("replication")


def _network(params: dict) -> Network:
    return Network(**config.get(params, "data.network"))


def cmd_data_idx(args: argparse.Namespace, params: dict) -> None:
    sources = mnist.prepare(args.dataset, args.out, mirror=mirror_root(),
                            network=_network(params))
    for file, source in sources.items():
        log.info("%s/%s <- %s", args.dataset, file, source)
    summary = mnist.summarize(args.dataset, args.out, config.get(params, "data.validation_size"))
    write_json(args.metrics, summary)


def cmd_data_imagenet_sample(args: argparse.Namespace, params: dict) -> None:
    source = imagenet.prepare_sample(args.out, mirror=mirror_root(),
                                     network=_network(params))
    log.info("imagenet sample <- %s", source)
    write_json(args.metrics, imagenet.summarize(args.out))


def cmd_data_ilsvrc2012(args: argparse.Namespace, params: dict) -> None:
    manifest = imagenet.prepare_ilsvrc2012_val(args.archives, args.out)
    if not manifest["available"]:
        log.warning("%s; the paper profile falls back to the ImageNet sample", manifest["reason"])


def cmd_train(args: argparse.Namespace, params: dict) -> None:
    from replication.training import run_training_stage

    metrics = run_training_stage(args.dataset, args.arch, args.labels, params, Path(args.data),
                                 Path(args.checkpoint), Path(args.metrics))
    log.info("%s-%s-%s: train %.4f, test %.4f in %.0f s", args.dataset, args.arch, args.labels,
             metrics["train_acc"], metrics["test_acc"], metrics["seconds"])


def cmd_imagenet_accuracy(args: argparse.Namespace, params: dict) -> None:
    from replication.evaluation import imagenet_accuracy
    from replication.fileio import atomic_directory
    from replication.models import create_model

    section = config.get(params, "imagenet")
    folder, note = imagenet.evaluation_folder(section["source"], args.sample, args.ilsvrc2012)
    with atomic_directory(args.out) as tmp:
        for name in section["models"]:
            result = imagenet_accuracy(create_model(name), folder, limit=section["accuracy_images"])
            result.update(images=str(folder), fallback_note=note)
            log.info("%s: top-1 %.4f on %d images", name, result["top1"], result["n_images"])
            write_json(tmp / f"{name}.json", result)


def cmd_sanity(args: argparse.Namespace, params: dict) -> None:
    """The Sanity Checks stages (replication.experiments.sanity_checks.stages)."""
    from replication.experiments.sanity_checks import stages, summary

    datasets, models = Path(args.datasets), Path(args.models)
    if args.stage == "randomization":
        stages.run_model_randomization(args.setup, args.mode, params, datasets=datasets,
                                       models=models, table_path=Path(args.table),
                                       maps_path=Path(args.maps), metrics_path=Path(args.metrics))
    elif args.stage == "data-randomization":
        stages.run_data_randomization_stage(args.setup, params, datasets=datasets, models=models,
                                            table_path=Path(args.table), maps_path=Path(args.maps),
                                            metrics_path=Path(args.metrics))
    elif args.stage == "calibration":
        stages.run_calibration(params, datasets=datasets, table_path=Path(args.table))
    elif args.stage == "bn-study":
        stages.run_bn_study(params, datasets=datasets, table_path=Path(args.table))
    elif args.stage == "toys":
        stages.run_toys(params, datasets=datasets, out_dir=Path(args.table), maps_path=Path(args.maps))
    elif args.stage == "summary":
        summary.run_summary(params, results=Path(args.results), claims_dir=Path(args.claims),
                            out=Path(args.metrics), bn_verdicts=Path(args.table))
    elif args.stage == "figures":
        from replication.experiments.sanity_checks import figures

        figures.draw_all(params, results=Path(args.results), maps=Path(args.maps),
                         claims_dir=Path(args.claims), out=Path(args.out))


PARCHGRAD_PATHS = ("datasets", "models", "statistics", "out", "metrics", "maps", "results",
                   "statistics_metrics", "archives")


def cmd_parchgrad(args: argparse.Namespace, params: dict) -> None:
    """The ParchGrad stages (replication.experiments.parchgrad.stages.STAGES)."""
    import inspect

    from replication.experiments.parchgrad.stages import STAGES

    stage = STAGES[args.stage]
    wanted = [p for p in inspect.signature(stage).parameters if p != "params"]
    missing = [p for p in wanted if getattr(args, p) is None]
    if missing:
        raise ConfigError(f"parchgrad {args.stage} needs " + ", ".join(
            f"--{m.replace('_', '-')}" for m in missing))
    stage(params, **{p: Path(getattr(args, p)) for p in wanted})


EGC_STAGES = ("comparison", "saturation", "smoothing", "baselines", "special-cases", "figures",
              "claims")


def cmd_expected_gradcam(args: argparse.Namespace, params: dict) -> None:
    """The Expected Grad-CAM stages (replication.experiments.expected_gradcam.stages)."""
    from replication.experiments.expected_gradcam import stages

    results = Path(args.results)
    if args.stage == "figures":
        stages.run_figures(params, results=results, out=Path(args.out))
    elif args.stage == "claims":
        stages.run_claims(params, results=results, out=Path(args.out))
    else:
        datasets, models = Path(args.datasets), Path(args.models)
        data = stages.DataPaths(imagenet_sample=datasets / "imagenet_sample",
                                ilsvrc2012=datasets / "ilsvrc2012_val", mnist=datasets / "mnist",
                                mnist_checkpoint=models / "mnist-cnn-true.pt")
        run = getattr(stages, f"run_{args.stage.replace('-', '_')}")
        run(params, data=data, results=results, metrics=Path(args.metrics))


def cmd_report(args: argparse.Namespace, params: dict) -> None:
    from replication.report import write_report

    verdicts = write_report(args.claims, args.out, params["profile"])
    log.info("report: %d claims -> %s", len(verdicts), Path(args.out) / "replication.md")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m replication", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="parameter file (params.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)

    idx = commands.add_parser("data-idx", help="MNIST / Fashion-MNIST: fetch, verify, summarise")
    idx.add_argument("dataset", choices=sorted(mnist.DATASETS))
    idx.add_argument("--out", required=True, help="folder for the decompressed IDX files")
    idx.add_argument("--metrics", required=True, help="JSON summary (sizes, class counts)")
    idx.set_defaults(run=cmd_data_idx)

    sample = commands.add_parser("data-imagenet-sample", help="the 1000-image ImageNet sample")
    sample.add_argument("--out", required=True)
    sample.add_argument("--metrics", required=True)
    sample.set_defaults(run=cmd_data_imagenet_sample)

    val = commands.add_parser("data-ilsvrc2012", help="ILSVRC2012 validation from your archives")
    val.add_argument("--archives", required=True, help="folder holding the archives (data/)")
    val.add_argument("--out", required=True)
    val.set_defaults(run=cmd_data_ilsvrc2012)

    train = commands.add_parser("train", help="train one MNIST/Fashion-MNIST model (Lightning)")
    train.add_argument("dataset", choices=sorted(mnist.DATASETS))
    train.add_argument("arch", choices=["cnn", "mlp"])
    train.add_argument("labels", choices=["true", "random"])
    train.add_argument("--data", required=True, help="prepared dataset folder")
    train.add_argument("--checkpoint", required=True)
    train.add_argument("--metrics", required=True)
    train.set_defaults(run=cmd_train)

    accuracy = commands.add_parser("imagenet-accuracy", help="top-1/top-5 of the ImageNet models")
    accuracy.add_argument("--sample", required=True, help="prepared ImageNet sample folder")
    accuracy.add_argument("--ilsvrc2012", required=True, help="prepared ILSVRC2012 val folder")
    accuracy.add_argument("--out", required=True, help="folder for <model>.json")
    accuracy.set_defaults(run=cmd_imagenet_accuracy)

    sanity = commands.add_parser("sanity", help="Sanity Checks for Saliency Maps: one stage")
    sanity.add_argument("stage", choices=["randomization", "data-randomization", "calibration",
                                          "bn-study", "toys", "summary", "figures"])
    sanity.add_argument("setup", nargs="?", help="imagenet | cnn-mnist | … (randomization stages)")
    sanity.add_argument("mode", nargs="?", choices=["cascading", "independent"])
    sanity.add_argument("--datasets", default="datasets")
    sanity.add_argument("--models", default="models")
    sanity.add_argument("--results", default="results/sanity_checks")
    sanity.add_argument("--claims", default="claims")
    sanity.add_argument("--table", help="output table (CSV; a folder for toys)")
    sanity.add_argument("--maps", help="output map renderings (.npz; a folder for figures)")
    sanity.add_argument("--metrics", help="output metrics (JSON)")
    sanity.add_argument("--out", help="output folder (figures)")
    sanity.set_defaults(run=cmd_sanity)

    parchgrad = commands.add_parser("parchgrad", help="ParchGrad: one stage")
    parchgrad.add_argument("stage", choices=["statistics", "toys", "vc", "q-sweep", "faithfulness",
                                             "costs", "statistics-checks", "bbox", "summary",
                                             "figures"])
    for name in PARCHGRAD_PATHS:
        parchgrad.add_argument(f"--{name.replace('_', '-')}", dest=name)
    parchgrad.set_defaults(run=cmd_parchgrad)

    egc = commands.add_parser("expected-gradcam", help="Expected Grad-CAM: one stage")
    egc.add_argument("stage", choices=EGC_STAGES)
    egc.add_argument("--datasets", default="datasets")
    egc.add_argument("--models", default="models")
    egc.add_argument("--results", default="results/expected_gradcam")
    egc.add_argument("--metrics", default="metrics/expected_gradcam", help="summary folder")
    egc.add_argument("--out", help="figures folder (figures) or claims JSON (claims)")
    egc.set_defaults(run=cmd_expected_gradcam)

    report = commands.add_parser("report", help="verdict of every claim: reports/replication.md")
    report.add_argument("--claims", default="claims")
    report.add_argument("--out", default="reports")
    report.set_defaults(run=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("lightning.pytorch", "lightning.fabric", "fontTools"):  # banners, per-call logs
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        args.run(args, config.load_params(args.params))
    except ReplicationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
