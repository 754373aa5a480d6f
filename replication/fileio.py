"""Atomic file output: a failed or interrupted write never leaves a partial file behind.

Output is written to a hidden sibling ``.{name}.XXXXXXXX.partial`` (file or folder) and renamed
onto ``{name}`` when complete. A process killed outright (``kill -9``) cannot clean up, so each
atomic write of a path first removes that path's stale partials: those no live writer holds (a
writer holds an flock on its partial while writing).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

CHUNK = 1 << 20
PARTIAL_SUFFIX = ".partial"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _partial_pattern(path: Path) -> re.Pattern[str]:
    # tempfile's random part uses [a-z0-9_]: ``.maps.npz.x.partial`` is never a partial of ``maps``.
    return re.compile(re.escape(f".{path.name}.") + "[a-z0-9_]+" + re.escape(PARTIAL_SUFFIX))


def _is_held(partial: Path) -> bool:
    """Whether a live writer holds ``partial`` (its flock outlives no process)."""
    try:
        fd = os.open(partial, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Remove what interrupted atomic writes of ``path`` left beside it; return what was removed.

    Only ``path``'s own pattern ``.{name}.XXXXXXXX.partial`` matches, and a partial that a live
    writer holds is kept.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = _partial_pattern(path)
    removed = []
    for entry in path.parent.iterdir():
        if not pattern.fullmatch(entry.name) or _is_held(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
    try:
        with os.fdopen(fd, mode) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # held until closed: this partial is live
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make outputs private
            os.replace(tmp, path)  # while still held, so no cleanup can take it first
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def json_safe(value: Any, *, infinity_as_string: bool = False) -> Any:
    """``value`` with numpy scalars made Python, keys made strings and NaN made None,
    recursively; ±inf becomes None too, or "inf" / "-inf" with ``infinity_as_string`` (strict
    JSON has neither)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, infinity_as_string=infinity_as_string)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, infinity_as_string=infinity_as_string) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        if not infinity_as_string:
            return None
        return "inf" if value > 0 else "-inf"
    return value


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> None:
    """``np.savez_compressed`` of ``arrays``, written atomically."""
    with atomic_open(path) as handle:
        np.savez_compressed(handle, **arrays)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in a temporary sibling; swap it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX))
    held = os.open(tmp, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # this partial is live while the block runs
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would make the output private
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        os.close(held)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --- tables and arrays: what experiments write and figures and claims read ----------------------

MISSING = ("error", "empty")  # a missing input file: a DataError naming the stage, or nothing


def _missing(path: Path, missing: str, empty: Any) -> Any:
    if missing not in MISSING:
        raise ValueError(f"missing must be one of {MISSING}, got {missing!r}")
    if missing == "empty":
        return empty
    from replication.errors import DataError

    raise DataError(f"{path} is missing: run `dvc repro` to produce it")


def write_table(frame: Any, path: str | os.PathLike, float_format: str = "%.6g") -> None:
    """A tidy table as CSV (six significant digits, LF line ends), written atomically."""
    import io

    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format=float_format, lineterminator="\n")
    atomic_write_text(path, buffer.getvalue())


def read_table(path: str | os.PathLike, missing: str = "error") -> Any:
    """A table written by ``write_table``; ``missing="empty"`` gives an empty frame."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        return _missing(path, missing, pd.DataFrame())
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:  # an empty frame without columns is written as one blank line
        return pd.DataFrame()


def read_arrays(path: str | os.PathLike, missing: str = "error") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` written by ``write_npz``; ``missing="empty"`` gives {}."""
    path = Path(path)
    if not path.is_file():
        return _missing(path, missing, {})
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def read_json(path: str | os.PathLike, missing: str = "error") -> Any:
    """A file written by ``write_json``; ``missing="empty"`` gives {}."""
    path = Path(path)
    if not path.is_file():
        return _missing(path, missing, {})
    return json.loads(path.read_text())


def concat_tables(frames: list[Any]) -> Any:
    """The non-empty frames stacked (an empty frame when there are none)."""
    import pandas as pd

    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
