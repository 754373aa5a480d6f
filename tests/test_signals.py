"""SIGTERM and Ctrl-C stop a stage within seconds, non-zero, and leave no output behind.

Each test starts a real stage command in a subprocess with settings that would run for minutes,
waits until it is computing, signals it and times the exit.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, leftovers, stage_settings

DEADLINE = 10.0  # seconds from the signal to the exit


def _cpu_seconds(pid: int) -> float:
    """CPU time a process has used (Linux: /proc/<pid>/stat, user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(args: list[str], wait_for: str | None = None, cpu_seconds: float | None = None,
           timeout: float = 180.0) -> subprocess.Popen:
    """Start ``python -m replication …`` and return once stderr shows ``wait_for`` (read in
    chunks: a progress bar redraws its line with carriage returns, never a newline), or once
    the process has computed for ``cpu_seconds`` (past its imports and loading)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    process = subprocess.Popen([sys.executable, "-m", "replication", *args], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, started = b"", time.monotonic()
    while time.monotonic() - started < timeout and process.poll() is None:
        if select.select([process.stderr], [], [], 0.5)[0]:
            seen += os.read(process.stderr.fileno(), 4096)
        if wait_for is not None and wait_for.encode() in seen:
            return process
        if cpu_seconds is not None and _cpu_seconds(process.pid) >= cpu_seconds:
            return process
    process.kill()
    pytest.fail(f"the stage never reached {wait_for or f'{cpu_seconds} CPU seconds'!r}:\n"
                f"{seen.decode(errors='replace')[-3000:]}")


def _stop(process: subprocess.Popen, signum: int) -> tuple[int, float, str]:
    time.sleep(2.0)  # inside the computation, not its set-up
    sent = time.monotonic()
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=60)
        err = err.decode(errors="replace")
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the stage ignored the signal for 60 s")
    return process.returncode, time.monotonic() - sent, err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_training_stops_on_a_signal_and_writes_nothing(signum, mnist_folder, tmp_path):
    settings = stage_settings("train", "smoke", train={"true_labels": {
        "epochs": 50, "subset": None, "batch_size": 50}})
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(settings))
    out = tmp_path / "out"
    process = _start(["train", "mnist", "cnn", "true", "--settings", str(tmp_path / "train.yaml"),
                      "--data", str(mnist_folder), "--checkpoint", str(out / "m.pt"),
                      "--metrics", str(out / "m.json")], wait_for="training mnist-cnn-true")
    code, seconds, err = _stop(process, signum)
    assert code == 128 + signum, err[-2000:]
    assert seconds < DEADLINE, f"took {seconds:.1f} s to stop"
    assert f"interrupted by {signal.Signals(signum).name}" in err
    assert not (out / "m.pt").exists() and not (out / "m.json").exists()
    assert not out.exists() or leftovers(out) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_attribution_stage_stops_on_a_signal_and_writes_nothing(signum, paper_images, tmp_path):
    """The engine's batch loop (the cascading randomization of EfficientNet-Lite0, minutes of
    IG-SmoothGrad on the paper's images) stops too: signalled once it has computed for 15 CPU
    seconds, well past its imports and loading."""
    settings = stage_settings("sanity_imagenet_randomization", "smoke", sanity_checks={
        "imagenet": {"images": 8, "demos": [], "guided_backprop_examples": 0, "batch_size": 4,
                     "methods": {"ig_smoothgrad": {"n_samples": 50, "steps": 50}}}})
    (tmp_path / "stage.yaml").write_text(yaml.safe_dump(settings))
    out = tmp_path / "out"
    outputs = {"table": out / "t.csv", "maps": out / "m.npz", "metrics": out / "m.json"}
    process = _start(["sanity_imagenet_randomization", "efficientnet_lite0", "cascading",
                      "--settings", str(tmp_path / "stage.yaml"), "--images", str(paper_images),
                      *(f"--{name}={path}" for name, path in outputs.items())],
                     cpu_seconds=15.0)
    code, seconds, err = _stop(process, signum)
    assert code == 128 + signum, err[-2000:]
    assert seconds < DEADLINE, f"took {seconds:.1f} s to stop"
    assert f"interrupted by {signal.Signals(signum).name}" in err
    assert not any(path.exists() for path in outputs.values())
    assert not out.exists() or leftovers(out) == []
