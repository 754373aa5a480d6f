"""The paper profile, proven end to end here (issue 13): its models, image sources, methods and
options with smoke-sized counts (tests/paper_dry_run.yaml), offline, on stand-in weights for the
torchvision models, through `dvc repro` — with a synthetic ILSVRC2012 and without any archive
(the fallback to the ImageNet sample). Every number is meaningless; every stage must run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, copy_checkout
from replication.config import deep_merge

BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-4000:]}\n" \
                                   f"{result.stderr[-8000:]}"
    return result


def paper_dry_run_repo(folder: Path, mirror: Path, archives: bool) -> tuple[Path, dict]:
    """A copy of this checkout on the paper profile with the dry-run overlay; with a synthetic
    ILSVRC2012 in data/ (its digests in the settings) when ``archives``."""
    from synthetic_ilsvrc import write_archives

    repo = folder / "repo"
    copy_checkout(repo)
    for output in ("metrics", "reports", "results", "figures"):
        shutil.rmtree(repo / output, ignore_errors=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    overlay = yaml.safe_load((ROOT / "tests" / "paper_dry_run.yaml").read_text())
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "REPLICATION_MIRROR": str(mirror), "DVC_NO_ANALYTICS": "1",
           "OMP_WAIT_POLICY": "PASSIVE"}
    _run(["make", "data/README.md"], repo, env)
    if archives:
        pins = write_archives(repo / "data", per_class=2)
        overlay = deep_merge(overlay, {"data": {"ilsvrc2012": {
            "val": pins["val"].digest, "devkit": pins["devkit"].digest}}})
    params["profile"] = "paper"
    params["profiles"]["paper"] = deep_merge(params["profiles"]["paper"] or {}, overlay)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], repo, env)
    return repo, env


@pytest.mark.slow
@pytest.mark.parametrize("archives", [True, False], ids=["synthetic-ilsvrc2012", "no-archives"])
def test_the_paper_profile_runs_end_to_end_on_stand_in_weights(tmp_path, mirror, archives):
    repo, env = paper_dry_run_repo(tmp_path, mirror, archives)
    _run([str(BIN / "python"), "-m", "replication", "params", "--check"], repo, env)
    _run([str(BIN / "dvc"), "repro"], repo, env)
    report = (repo / "reports" / "replication.md").read_text()
    assert "profile **paper**" in report and "stand-in weights" in report.splitlines()[2]
    claims = json.loads((repo / "reports" / "claims.json").read_text())
    assert {"data", "sanity_checks", "expected_gradcam", "parchgrad"} <= {c["paper"] for c in claims}
    for path in (repo / "metrics").rglob("*.json"):
        data = json.loads(path.read_text())
        model = data.get("model") if isinstance(data, dict) else None
        name = model.get("name") if isinstance(model, dict) else model  # claims: {name, …}
        if path.name == "claims.json" or (isinstance(name, str)
                                          and name.startswith(("inception", "vgg", "resnet"))):
            assert "stand_in_weights" in data, f"{path} ran on stand-in weights without saying so"
    lite0 = json.loads((repo / "metrics" / "imagenet" / "efficientnet_lite0.json").read_text())
    assert "stand_in_weights" not in lite0, "a model with real weights was stamped"
    manifest = json.loads((repo / "datasets" / "ilsvrc2012_val" / "manifest.json").read_text())
    assert manifest["available"] is archives
    status = _run([str(BIN / "dvc"), "status"], repo, env).stdout
    assert "up to date" in status
