"""The smoke profile through `dvc repro`, offline with the mirror: the data stages (fast) and
the whole pipeline (slow)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, copy_checkout

# No float result of torch or numpy kernels is compared here: .ci/numeric-isa skips this file.
pytestmark = pytest.mark.isa_independent

BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory, mirror) -> tuple[Path, dict]:
    """A copy of this checkout (what git would commit) switched to the smoke profile."""
    repo = tmp_path_factory.mktemp("repo")
    copy_checkout(repo)
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


DATA_STAGES = ["idx_data", "imagenet_sample", "ilsvrc2012_val"]


def test_smoke_data_stages_run_offline_through_dvc(smoke_repo):
    repo, env = smoke_repo
    _run([str(BIN / "dvc"), "repro", *DATA_STAGES], repo, env)
    for name in ("mnist", "fashion_mnist", "imagenet_sample"):
        assert json.loads((repo / "metrics" / "data" / f"{name}.json").read_text())["dataset"] == name
    assert len(list((repo / "datasets" / "imagenet_sample" / "images").iterdir())) == 1000
    manifest = json.loads((repo / "datasets" / "ilsvrc2012_val" / "manifest.json").read_text())
    assert manifest["available"] is False
    # The report runs on whatever metrics exist: the data claims hold, the rest are not run yet.
    _run([str(BIN / "python"), "-m", "replication", "settings", "--params", "params.yaml",
          "--out", "settings"], repo, env)
    _run([str(BIN / "python"), "-m", "replication", "report", "--params", "params.yaml",
          "--claims", "claims", "--metrics", "metrics", "--markdown", "reports/replication.md",
          "--json", "reports/claims.json"], repo, env)
    report = (repo / "reports" / "replication.md").read_text()
    assert "profile **smoke**" in report
    claims = json.loads((repo / "reports" / "claims.json").read_text())
    assert claims and {c["status"] for c in claims if c["paper"] == "data"} == {"reproduced"}
    status = _run([str(BIN / "dvc"), "status", *DATA_STAGES], repo, env).stdout
    assert "up to date" in status


@pytest.mark.slow
def test_the_whole_smoke_pipeline_runs_through_dvc(smoke_repo):
    """Every stage of the three papers on the smoke profile (about 10 minutes on 2 cores)."""
    repo, env = smoke_repo
    _run([str(BIN / "dvc"), "repro"], repo, env)
    claims = json.loads((repo / "reports" / "claims.json").read_text())
    papers = {c["paper"] for c in claims}
    assert {"data", "sanity_checks", "expected_gradcam", "parchgrad"} <= papers
    measured = [c for c in claims if c["paper"] != "data" and c["status"] != "not run"]
    assert len(measured) > 50, "most claims get a value even on the smoke profile"
    for paper in ("sanity_checks", "expected_gradcam", "parchgrad"):
        assert list((repo / "figures" / paper).glob("*.png")), paper
    status = _run([str(BIN / "dvc"), "status"], repo, env).stdout
    assert "up to date" in status


def test_data_folder_restored_from_the_template_matches_data_dvc(smoke_repo):
    repo, env = smoke_repo
    status = _run([str(BIN / "dvc"), "status", "data.dvc"], repo, env).stdout
    assert "modified" not in status and "deleted" not in status


def _in_fresh_process(code: str) -> str:
    """What ``code`` prints, run in a fresh interpreter: the settings tested are process-wide."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("flush", [False, True])
def test_stages_flush_subnormal_floats_to_zero(flush):
    """run_stage flushes subnormals (benchmarks/results/denormals.md)."""
    out = _in_fresh_process("import torch\nfrom replication.pipeline import flush_denormals\n"
                            + ("flush_denormals()\n" if flush else "")
                            + "x = torch.full((64,), 1e-39)\nprint(float((x * 1.5).sum()))")
    assert (float(out) == 0.0) is flush


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_stages_keep_freed_memory_instead_of_faulting_it_in_again():
    """run_stage keeps freed memory for reuse (benchmarks/allocator.py): a 64 MiB tensor made
    and freed 40 times faults its pages in a few times (the heap grows once), not 40 times."""
    def page_faults(keep: bool) -> int:
        return int(_in_fresh_process(
            "import resource, torch\nfrom replication.pipeline import keep_freed_memory\n"
            + ("assert keep_freed_memory()\n" if keep else "")
            + "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
              "for _ in range(40):\n    torch.ones(16 << 20).sum()\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)"))

    pages = (64 << 20) // 4096
    assert page_faults(keep=False) > 20 * pages    # each tensor faulted in anew
    assert page_faults(keep=True) < 8 * pages
