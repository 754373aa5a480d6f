"""fileio: JSON-safe values, atomic files and folders, and what killed writes leave behind."""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, leftovers

from replication.fileio import (atomic_directory, atomic_open, atomic_write_bytes, json_safe,
                                remove_stale_partials, write_npz)

# No float result of torch or numpy kernels is compared here: .ci/numeric-isa skips this file.
pytestmark = pytest.mark.isa_independent


def test_json_safe_makes_numpy_and_non_finite_values_strict_json():
    value = {1: [np.float32(0.5), np.int64(3), math.nan, (math.inf, -math.inf)], "b": np.bool_(True)}
    assert json_safe(value) == {"1": [0.5, 3, None, [None, None]], "b": True}
    assert json_safe(value, infinity_as_string=True)["1"][3] == ["inf", "-inf"]
    json.dumps(json_safe(value), allow_nan=False)


def test_write_npz_round_trips_and_leaves_no_partial_file(tmp_path):
    arrays = {"maps": np.arange(6, dtype=np.float32).reshape(2, 3), "names": np.array(["a", "b"])}
    write_npz(tmp_path / "sub" / "maps.npz", arrays)
    with np.load(tmp_path / "sub" / "maps.npz") as data:
        assert set(data.files) == set(arrays)
        assert np.array_equal(data["maps"], arrays["maps"])
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["maps.npz"]


# A writer killed mid-write (kill -9 cannot be cleaned up after): it prints READY once its
# partial exists, then waits to be killed.
KILLED_WRITER = """
import sys, time
from replication.fileio import atomic_directory, atomic_open
kind, path = sys.argv[1], sys.argv[2]
with (atomic_open(path) if kind == "file" else atomic_directory(path)) as partial:
    if kind == "file":
        partial.write(b"x" * 1000)
        partial.flush()
    else:
        (partial / "half.jpg").write_bytes(b"x" * 1000)
    print("READY", flush=True)
    time.sleep(60)
"""


def _killed_write(kind: str, path: Path) -> None:
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, kind, str(path)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert writer.stdout.readline().strip() == "READY"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)


def test_the_next_write_of_a_path_removes_its_stale_partials_and_nothing_else(tmp_path):
    _killed_write("file", tmp_path / "train.idx")
    _killed_write("dir", tmp_path / "sample")
    assert len(leftovers(tmp_path)) == 2  # the killed writers' partial file and folder
    unrelated = [".train.idx.bak.abcd1234.partial", ".other.abcd1234.partial",
                 ".train.idx.partial", "train.idx.abcd1234.partial", "notes.txt"]
    for name in unrelated:
        (tmp_path / name).write_text("keep me")
    atomic_write_bytes(tmp_path / "train.idx", b"complete")
    with atomic_directory(tmp_path / "sample") as folder:
        (folder / "image.jpg").write_bytes(b"complete")
    assert (tmp_path / "train.idx").read_bytes() == b"complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(unrelated + ["sample", "train.idx"])


def test_a_partial_a_live_writer_holds_is_kept(tmp_path):
    with atomic_open(tmp_path / "maps.npz") as handle:
        handle.write(b"in progress")
        assert remove_stale_partials(tmp_path / "maps.npz") == []  # another writer's cleanup
        assert len(leftovers(tmp_path)) == 1
    assert leftovers(tmp_path) == [] and (tmp_path / "maps.npz").read_bytes() == b"in progress"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with atomic_directory(tmp_path / "sample") as folder:
            (folder / "images").mkdir()
        write_npz(tmp_path / "maps.npz", {"a": np.zeros(2)})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "sample").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "sample" / "images").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "maps.npz").stat().st_mode) == 0o666 & ~umask
