from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mirror() -> Path | None:
    value = os.environ.get("REPLICATION_MIRROR")
    candidate = Path(value).expanduser() if value else ROOT.parent / "shared" / "datasets"
    if not candidate.is_absolute():
        candidate = ROOT / candidate
    return candidate.resolve() if candidate.is_dir() else None


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The local data mirror (REPLICATION_MIRROR or ../shared/datasets).

    Tests that need real data skip when no mirror is configured, but a REPLICATION_MIRROR that
    names a missing folder (a broken CI set-up) fails them instead of silently skipping.
    """
    found = _mirror()
    if found is None:
        if os.environ.get("REPLICATION_MIRROR"):
            pytest.fail(f"REPLICATION_MIRROR={os.environ['REPLICATION_MIRROR']} is not a folder")
        pytest.skip("no data mirror: set REPLICATION_MIRROR to a folder like ../shared/datasets")
    return found


@pytest.fixture(scope="session")
def mnist_folder(mirror, tmp_path_factory) -> Path:
    """MNIST prepared from the mirror into a session folder (a test module may define its own)."""
    from replication.data import mnist

    folder = tmp_path_factory.mktemp("data") / "mnist"
    mnist.prepare("mnist", folder, mirror=mirror)
    return folder


@pytest.fixture(scope="session")
def paper_images(mirror, tmp_path_factory) -> Path:
    """The Sanity Checks paper's 200 ImageNet images and demo images (the `sanity_images` stage),
    prepared from the mirror into a session folder."""
    from replication.data import sanity_images

    folder = tmp_path_factory.mktemp("data") / "sanity_checks_imagenet"
    sanity_images.prepare(folder, mirror=mirror)
    return folder


@pytest.fixture(scope="module")
def cnn():
    """The MNIST CNN with seeded authors' initial weights (untrained), one per test module."""
    import torch

    from replication.models import create_model

    torch.manual_seed(0)
    return create_model("mnist_cnn")


@pytest.fixture
def no_network(monkeypatch):
    """Every download fails as it would offline; returns the list of URLs that were tried."""
    tried: list[str] = []

    def refuse(url, *args, **kwargs):
        tried.append(url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return tried


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders a failed atomic write might have left behind."""
    return sorted(p.name for p in folder.rglob("*") if ".partial" in p.name)


def copy_checkout(dest: Path) -> Path:
    """A copy of this checkout as git would commit it (tracked and untracked-but-not-ignored files)
    in ``dest``, for tests that run the pipeline on a copy."""
    import shutil
    import subprocess

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def stage_settings(stage: str, profile: str = "smoke", **overrides) -> dict:
    """What ``stage`` reads under ``profile`` of the repository's params.yaml, with
    ``overrides`` (a nested mapping, e.g. ``sanity_checks={"mnist": {"images": 2}}``) merged
    over the effective settings and checked again: tests shrink the real configuration, never
    a hand-written copy of it."""
    from replication.config import _schema, deep_merge, load_params
    from replication.pipeline import extract, get_stage

    params = deep_merge(load_params(ROOT / "params.yaml", profile), overrides)
    params = _schema().from_params(params, "").as_params()
    return extract(params, get_stage(stage).reads)


def stage_context(stage: str, *, inputs: dict | None = None, outputs: dict | None = None,
                  item: dict | None = None, profile: str = "smoke", **overrides):
    """A ``StageContext`` for calling a stage function directly in a test."""
    from replication.pipeline import StageContext, get_stage

    declared = get_stage(stage)
    return StageContext(declared, stage_settings(stage, profile, **overrides),
                        {k: Path(v) for k, v in (inputs or {}).items()},
                        {k: Path(v) for k, v in (outputs or {}).items()}, item)
