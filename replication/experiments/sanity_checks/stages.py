"""The Sanity Checks stages: each loads what it needs, runs one experiment, writes its outputs.

Setups: ``imagenet`` (the profile's ImageNet model on its image set) and the four MNIST /
Fashion-MNIST models ``<cnn|mlp>-<mnist|fashion_mnist>`` (trained on true labels by the train
stage). Tables go to ``results/sanity_checks/`` (committed), map renderings for the galleries to
``.npz`` files (DVC cache), summary values to ``metrics/sanity_checks/``.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from replication.data import imagenet
from replication.errors import ConfigError
from replication.experiments.common import (Explainer, ImageSet, imagenet_set, mnist_set,
                                            read_csv, trained_mnist_model, write_csv)
from replication.experiments.sanity_checks.data_randomization import (first_image_of_class,
                                                                      run_data_randomization)
from replication.experiments.sanity_checks.model_randomization import (SimilaritySettings,
                                                                       run_randomization,
                                                                       summarize_table)
from replication.experiments.sanity_checks.randomization import RandomizationOptions
from replication.fileio import atomic_write_bytes, write_json
from replication.metrics.similarity import null_calibration
from replication.models import ModelCard, create_model

log = logging.getLogger(__name__)

MNIST_SETUPS = ("cnn-mnist", "cnn-fashion_mnist", "mlp-mnist", "mlp-fashion_mnist")
SETUPS = ("imagenet", *MNIST_SETUPS)
CAM_METHODS = ("gradcam", "guided_gradcam")  # an MLP has no convolution to take a CAM of


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def similarity_settings(section: dict) -> SimilaritySettings:
    return SimilaritySettings(metrics=tuple(section["metrics"]), percentile=section["percentile"],
                              ssim_data_range=section.get("ssim_data_range", 2.0),
                              hog_correlation=section.get("hog_correlation", "spearman"))


def _split(setup: str) -> tuple[str, str]:
    if setup not in MNIST_SETUPS:
        raise ConfigError(f"unknown setup {setup!r}; choose one of {list(SETUPS)}")
    arch, dataset = setup.split("-", 1)
    return arch, dataset


def setup_methods(setup: str, params: dict) -> dict[str, dict]:
    section = params["sanity_checks"]["imagenet" if setup == "imagenet" else "mnist"]
    methods = {name: dict(p or {}) for name, p in section["methods"].items()}
    if setup.startswith("mlp"):
        methods = {k: v for k, v in methods.items() if k not in CAM_METHODS}
    return methods


def imagenet_images(params: dict, card: ModelCard, datasets: Path, count: int | None = None
                    ) -> ImageSet:
    """The profile's ImageNet image set: the source's gallery images first, then a seeded
    choice: of ``per_class`` images of each of ``classes`` on ILSVRC2012 validation (the
    authors' 10 × 20 design), of any images on the one-per-class sample."""
    section = params["sanity_checks"]["imagenet"]
    folder, note = imagenet.evaluation_folder(params["imagenet"]["source"],
                                              datasets / "imagenet_sample",
                                              datasets / "ilsvrc2012_val")
    source = "sample" if folder == datasets / "imagenet_sample" else "ilsvrc2012_val"
    count = section["images"] if count is None else count
    gallery = list(section["gallery"][source])[:count]
    exclude: list[str] = []
    if source == "ilsvrc2012_val" and section.get("classes"):
        rows = imagenet.read_labels(folder)
        rng = np.random.default_rng(params["seed"])
        wanted = []
        for name in section["classes"]:
            files = [r["file"] for r in rows if r["class_name"] == name]
            if not files:
                raise ConfigError(f"sanity_checks.imagenet.classes: no class named {name!r}")
            wanted += list(rng.choice(files, min(section["per_class"], len(files)), replace=False))
        exclude = [r["file"] for r in rows if r["file"] not in set(wanted) | set(gallery)]
    images = imagenet_set(folder, card, count, params["seed"], include=gallery, exclude=exclude,
                          source=source)
    if note:
        images.notes.append(note)
    return images


def load_setup(setup: str, params: dict, datasets: Path, models: Path
               ) -> tuple[ModelCard, ImageSet, SimilaritySettings]:
    section = params["sanity_checks"]
    if setup == "imagenet":
        card = create_model(section["imagenet"]["model"])
        return card, imagenet_images(params, card, datasets), similarity_settings(
            section["similarity"]["imagenet"])
    arch, dataset = _split(setup)
    card = trained_mnist_model(models / f"{dataset}-{arch}-true.pt", arch)
    images = mnist_set(datasets / dataset, section["mnist"]["images"])
    return card, images, similarity_settings(section["similarity"]["mnist"])


def run_model_randomization(setup: str, mode: str, params: dict, *, datasets: Path, models: Path,
                            table_path: Path, maps_path: Path, metrics_path: Path) -> pd.DataFrame:
    """Cascading or independent randomization of one setup: the per-image similarity table,
    the gallery renderings and a small metrics file."""
    start = time.perf_counter()
    section = params["sanity_checks"]
    card, images, similarity = load_setup(setup, params, datasets, models)
    methods = setup_methods(setup, params)
    options = RandomizationOptions.from_params(section["randomization"])
    setup_section = section["imagenet" if setup == "imagenet" else "mnist"]
    if mode == "independent":
        independent = setup_section.get("independent", {})
        if independent.get("methods"):
            methods = {k: v for k, v in methods.items() if k in independent["methods"]}
        if independent.get("images"):
            images = images.subset(range(min(independent["images"], len(images))))
    explainer = Explainer(batch_size=setup_section.get("batch_size", 16))
    gallery_count = (len(setup_section["gallery"][images.source]) if setup == "imagenet" else 1)
    gallery = list(range(min(gallery_count, len(images))))
    table, arrays = run_randomization(card, images, methods, mode, options, similarity,
                                      explainer=explainer, target=section["target"],
                                      gallery=gallery)
    examples = setup_section.get("guided_backprop_examples", 0)
    if mode == "cascading" and examples:  # Fig. 8–9: Guided Backprop on more images
        _, extra = run_randomization(card, images.subset(range(min(examples, len(images)))),
                                     {"guided_backprop": methods.get("guided_backprop", {})},
                                     mode, options, similarity, explainer=explainer,
                                     target=section["target"], gallery=range(examples))
        arrays.update({f"examples/{key}": value for key, value in extra.items()})
    table.insert(0, "setup", setup)
    write_csv(table, table_path)
    save_arrays(maps_path, {**arrays, "image_names": np.array(images.names[:len(gallery)])})
    write_json(metrics_path, {
        "setup": setup, "mode": mode, "model": card.name, "images": len(images),
        "image_source": images.source, "notes": images.notes, "methods": methods,
        "randomization": options.as_params(), "target": section["target"],
        "stages": int(table["stage_index"].max()), "seconds": round(time.perf_counter() - start, 1),
    })
    return table


def run_data_randomization_stage(setup: str, params: dict, *, datasets: Path, models: Path,
                                 table_path: Path, maps_path: Path, metrics_path: Path) -> pd.DataFrame:
    """True-label vs permuted-label model of one MNIST setup (Fig. 6, 22–25)."""
    start = time.perf_counter()
    section = params["sanity_checks"]
    arch, dataset = _split(setup)
    true_model = trained_mnist_model(models / f"{dataset}-{arch}-true.pt", arch)
    random_model = trained_mnist_model(models / f"{dataset}-{arch}-random.pt", arch)
    images = mnist_set(datasets / dataset, section["data_randomization"]["images"])
    example = first_image_of_class(images, section["data_randomization"]["example_class"])
    table, arrays = run_data_randomization(
        true_model, random_model, images, setup_methods(setup, params),
        similarity_settings(section["similarity"]["mnist"]), explainer=Explainer(),
        target=section["target"], example=example)
    table.insert(0, "setup", setup)
    write_csv(table, table_path)
    save_arrays(maps_path, arrays)
    write_json(metrics_path, {
        "setup": setup, "images": len(images), "example": images.names[example],
        "explained_class_agreement": table.attrs["explained_class_agreement"],
        "seconds": round(time.perf_counter() - start, 1)})
    return table


def run_calibration(params: dict, *, datasets: Path, table_path: Path) -> pd.DataFrame:
    """App. B: real maps of the original ImageNet model against random masks, and masks
    against masks (computed, not copied)."""
    section = params["sanity_checks"]
    card = create_model(section["imagenet"]["model"])
    images = imagenet_images(params, card, datasets, count=section["calibration"]["images"])
    from replication.experiments.sanity_checks.randomization import explained_classes

    targets = explained_classes(card.model, images.images, section["target"], images.labels)
    explainer = Explainer(batch_size=section["imagenet"].get("batch_size", 16))
    methods = setup_methods("imagenet", params)
    maps = {name: explainer(card, name, methods[name], images.images, targets)
            for name in section["calibration"]["methods"]}
    settings = similarity_settings(section["similarity"]["imagenet"])
    table = null_calibration(maps, seed=params["seed"], **{
        k: v for k, v in settings.options().items() if k != "percentile"})
    table.insert(0, "model", card.name)
    table.insert(1, "images", len(images))
    write_csv(table, table_path)
    return table


def summarize_results(results: Path) -> dict[str, pd.DataFrame]:
    """The summarized tables of every randomization run found under ``results``."""
    tables = {}
    for path in sorted((results / "randomization").glob("*.csv")):
        tables[path.stem] = summarize_table(read_csv(path).drop(columns="setup"))
    return tables


def run_bn_study(params: dict, *, datasets: Path, table_path: Path) -> pd.DataFrame:
    """Cascading randomization of the ImageNet model under each batch-norm option, compared
    under each map convention (the MPRT debates: which verdicts survive the options)."""
    section = params["sanity_checks"]
    study = section["bn_study"]
    card = create_model(section["imagenet"]["model"])
    images = imagenet_images(params, card, datasets, count=study["images"])
    methods = {m: setup_methods("imagenet", params)[m] for m in study["methods"]}
    base = similarity_settings(section["similarity"]["imagenet"])
    conventions = [dataclasses.replace(base, metrics=("spearman_abs", "spearman_diverging"),
                                       percentile=p, convention=f"percentile_{p}")
                   for p in study["percentiles"]]
    explainer = Explainer(batch_size=section["imagenet"].get("batch_size", 16))
    tables = []
    for batchnorm in study["batchnorm"]:
        options = RandomizationOptions.from_params({**section["randomization"],
                                                    "batchnorm": batchnorm})
        table, _ = run_randomization(card, images, methods, "cascading", options, conventions,
                                     explainer=explainer, target=section["target"])
        table.insert(0, "batchnorm", batchnorm)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    write_csv(table, table_path)
    return table


def run_toys(params: dict, *, datasets: Path, out_dir: Path, maps_path: Path) -> None:
    """Fig. 7/37 (one-layer sum-pooled conv net), Fig. 19 (input ⊙ random gradients) and the
    linear-model identities of §5 (claims C17, C18)."""
    from replication.experiments.sanity_checks import toys

    section = params["sanity_checks"]["toys"]
    image = toys.load_image(datasets / "imagenet_sample" / "images" / section["image"])
    study = toys.one_layer_edge_study(image, filter_seeds=range(section["filter_seeds"]),
                                      seed=params["seed"])
    write_csv(study.table, out_dir / "edge_study.csv")
    write_csv(toys.locality_check(image, seed=params["seed"]), out_dir / "locality.csv")
    arrays = {f"{version}/{method}": value.astype(np.float32)
              for version, maps in study.maps.items() for method, value in maps.items()}
    save_arrays(maps_path, {**arrays, "image": study.image.astype(np.float32),
                            "edges": study.edges.astype(np.float32)})

    card = create_model(params["sanity_checks"]["imagenet"]["model"])
    photos = imagenet_images(params, card, datasets, count=section["imagenet_images"]).images
    digits = mnist_set(datasets / "fashion_mnist", section["fashion_images"]).images
    tables = []
    for location in section["noise_locations"]:
        for name, images, options in (("imagenet", photos, {}),
                                      ("fashion_mnist", digits, {"percentile": None,
                                                                 "pixels_per_cell": 4})):
            table = toys.input_times_random(images, section["noise_scales"], params["seed"],
                                            location=location, **options)
            table.insert(0, "images", name)
            tables.append(table)
    write_csv(pd.concat(tables, ignore_index=True), out_dir / "input_times_random.csv")
    write_csv(linear_identities(digits, params["seed"]), out_dir / "linear_identities.csv")


def linear_identities(images: torch.Tensor, seed: int) -> pd.DataFrame:
    """§5 / C17 on a random linear model f(x) = W x: Gradient = SmoothGrad = w and
    IG (zero baseline) = Gradient⊙Input = w ⊙ x; the largest deviation of each, measured."""
    from replication.attribution import attribute

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(images[0].numel(), 10))
    targets = torch.arange(len(images)) % 10
    w = model[1].weight.detach()[targets].view_as(images)
    checks = {
        ("gradient", "w"): (attribute("gradient", model, images, targets), w),
        ("smoothgrad", "w"): (attribute("smoothgrad", model, images, targets, n_samples=10), w),
        ("integrated_gradients", "w ⊙ x"): (attribute("integrated_gradients", model, images,
                                                      targets, steps=10), w * images),
        ("input_x_gradient", "w ⊙ x"): (attribute("input_x_gradient", model, images, targets),
                                        w * images),
    }
    return pd.DataFrame([{"method": method, "expected": expected,
                          "max_abs_difference": float((maps - reference).abs().max()),
                          "scale": float(reference.abs().max())}
                         for (method, expected), (maps, reference) in checks.items()])


STAGES: list = []  # TEMPORARY during the migration
