"""The smoke profile's data stages, run through `dvc repro` offline with the mirror."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory, mirror) -> tuple[Path, dict]:
    """A copy of this checkout (what git would commit) switched to the smoke profile."""
    repo = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "smoke"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for output in ("metrics", "reports"):  # committed outputs: start from nothing
        shutil.rmtree(repo / output, ignore_errors=True)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "REPLICATION_MIRROR": str(mirror), "DVC_NO_ANALYTICS": "1"}
    _run(["make", "data/README.md"], repo, env)  # what `make reproduce` does on a fresh clone
    _run(["git", "init", "-q"], repo, env)
    return repo, env


def test_smoke_data_stages_run_offline_through_dvc(smoke_repo):
    repo, env = smoke_repo
    _run([str(BIN / "dvc"), "repro"], repo, env)
    for name in ("mnist", "fashion_mnist", "imagenet_sample"):
        assert json.loads((repo / "metrics" / "data" / f"{name}.json").read_text())["dataset"] == name
    assert len(list((repo / "datasets" / "imagenet_sample" / "images").iterdir())) == 1000
    manifest = json.loads((repo / "datasets" / "ilsvrc2012_val" / "manifest.json").read_text())
    assert manifest["available"] is False
    report = (repo / "reports" / "replication.md").read_text()
    assert "profile **smoke**" in report
    claims = json.loads((repo / "reports" / "claims.json").read_text())
    assert claims and {c["status"] for c in claims if c["paper"] == "data"} == {"reproduced"}
    status = _run([str(BIN / "dvc"), "status"], repo, env).stdout
    assert "up to date" in status


def test_data_folder_restored_from_the_template_matches_data_dvc(smoke_repo):
    repo, env = smoke_repo
    status = _run([str(BIN / "dvc"), "status", "data.dvc"], repo, env).stdout
    assert "modified" not in status and "deleted" not in status
