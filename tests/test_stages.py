"""The stage contract: declarations, dvc.yaml, settings files and code dependencies agree."""

from __future__ import annotations

import modulefinder
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from replication.config import MODELS, PROFILES, load_params
from replication.pipeline import (PACKAGE_ROOT, StageContext, code_deps, extract, is_per_model,
                                  render_dvc_yaml, stages)


def test_dvc_yaml_is_generated_from_the_declarations():
    assert (ROOT / "dvc.yaml").read_text() == render_dvc_yaml(), (
        "dvc.yaml differs from the stage declarations: run `python -m replication dvc-yaml`")


def test_committed_settings_files_are_what_the_settings_stage_writes():
    params = load_params(ROOT / "params.yaml")
    for stage in stages().values():
        if stage.params_file:
            continue
        written = yaml.safe_load((ROOT / stage.settings_path).read_text()) or {}
        assert written == extract(params, stage.reads), stage.name


def _models(settings: dict, path: tuple[str, ...] = ()) -> set[str]:
    found = set()
    for key, value in settings.items():
        if isinstance(value, dict):
            if key == MODELS and is_per_model(list(path)):
                found |= set(value)
            found |= _models(value, (*path, key))
    return found


@pytest.mark.parametrize("profile", PROFILES)
def test_every_stage_settings_build_under_every_profile_for_every_model(profile):
    """Each key a stage reads is built into its typed settings for each model it may run;
    nothing is computed."""
    params = load_params(ROOT / "params.yaml", profile)
    for stage in stages().values():
        if stage.params_file:
            continue
        settings = extract(params, stage.reads)
        context = StageContext(stage, settings, {}, {})
        for key in stage.reads:
            for model in [None, *sorted(_models(settings))]:
                context.settings(key, model=model)


def test_a_sections_own_models_entry_applies_to_that_model():
    """`train.models.mnist_cnn` (a section's own per-model entry) is what the CNN trains with;
    the MLP keeps the section's values."""
    stage = stages()["train"]
    settings = extract(load_params(ROOT / "params.yaml", "smoke"), stage.reads)
    settings["train"]["models"] = {"mnist_cnn": {**settings["train"], "l2_penalty": 0.5}}
    context = StageContext(stage, settings, {}, {})
    assert context.settings("train", model="mnist_cnn").l2_penalty == 0.5
    assert context.settings("train", model="mnist_mlp").l2_penalty == settings["train"]["l2_penalty"]
    assert context.settings("train.l2_penalty", model="mnist_cnn") == 0.5


def test_a_stage_cannot_read_a_key_it_did_not_declare():
    from replication.errors import ConfigError

    stage = stages()["train"]
    context = StageContext(stage, extract(load_params(ROOT / "params.yaml"), stage.reads), {}, {})
    with pytest.raises(ConfigError, match="reads 'imagenet.source' without declaring it"):
        context.settings("imagenet.source")


def _found_by_modulefinder(module: str) -> set[str]:
    """An independent static import scan (the standard library's, on bytecode), limited to
    this package."""
    finder = modulefinder.ModuleFinder(path=[str(ROOT)])
    finder.run_script(str(ROOT / (module.replace(".", "/") + ".py")))
    files = {m.__file__ for m in finder.modules.values() if m.__file__}
    return {str(Path(f).resolve().relative_to(ROOT)) for f in files
            if Path(f).resolve().is_relative_to(PACKAGE_ROOT)}


def test_code_deps_cover_every_module_a_stage_imports():
    for stage in stages().values():
        deps = code_deps(stage)
        for file in _found_by_modulefinder(stage.module):
            assert any(file == d or file.startswith(d + "/") for d in deps), (
                f"stage {stage.name} imports {file}, which its deps do not cover")


def test_every_dependency_is_produced_by_a_stage_or_supplied():
    supplied = {"data", "claims"}  # folders you supply (or a file in them)
    produced = {out.path.split("{")[0].rstrip("/") for s in stages().values()
                for out in s.outs.values()}
    for stage in stages().values():
        for path in stage.deps.values():
            root = path.split("{")[0].rstrip("/")
            assert root.split("/")[0] in supplied or any(root == p or root.startswith(p + "/") or
                                           p.startswith(root + "/") for p in produced), (
                f"{stage.name} depends on {path}, which no stage writes")
