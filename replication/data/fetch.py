"""Obtain raw files from the local mirror or upstream, verified against pinned SHA-256 digests.

Sources are tried in order: the mirror folder (``REPLICATION_MIRROR``, laid out like
``../shared/datasets``), then each upstream URL. A digest mismatch is always an error, never a
reason to try the next source: a corrupted copy must be noticed, not papered over.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from replication.errors import ChecksumMismatch, DataError, DataUnavailable
from replication.fileio import CHUNK, atomic_write_bytes, sha256_bytes, sha256_file
from replication.settings import NonNegative, Positive, PositiveInt, Settings, settings

log = logging.getLogger(__name__)

MIRROR_ENV = "REPLICATION_MIRROR"


@settings
class Network(Settings):
    """How hard to try upstream before giving up (``data.network`` in params.yaml)."""

    attempts: PositiveInt = 4
    backoff_seconds: NonNegative = 2.0
    timeout_seconds: Positive = 60.0


@dataclass(frozen=True)
class RawFile:
    """One raw input: where it lives in the mirror, where upstream, and the digest of its content.

    For gzip-compressed files the digest is of the *decompressed* bytes, which are identical
    whichever archive (mirror recompression or upstream original) they came from.
    """

    mirror_path: str
    sha256: str
    urls: tuple[str, ...]
    gzipped: bool = False


def mirror_root(value: str | None = None) -> Path | None:
    """The mirror folder from ``REPLICATION_MIRROR`` (or ``value``); ``None`` when unset."""
    value = os.environ.get(MIRROR_ENV) if value is None else value
    if not value:
        return None
    root = Path(value).expanduser().resolve()
    if not root.is_dir():
        raise DataError(
            f"{MIRROR_ENV}={value} is not a folder. Point it at a data mirror laid out like "
            "../shared/datasets (mnist/, fashion-mnist/, imagenet-sample/), or unset it to download."
        )
    return root


def download(url: str, sink: BinaryIO, network: Network) -> None:
    """Stream ``url`` into ``sink``, retrying transient network errors with exponential backoff."""
    for attempt in range(1, network.attempts + 1):
        sink.seek(0)
        sink.truncate()
        try:
            with urllib.request.urlopen(url, timeout=network.timeout_seconds) as response:
                shutil.copyfileobj(response, sink, CHUNK)
            return
        except urllib.error.HTTPError as err:
            if err.code < 500 or attempt == network.attempts:
                raise
        except (urllib.error.URLError, socket.timeout, ConnectionError, TimeoutError):
            if attempt == network.attempts:
                raise
        delay = network.backoff_seconds * 2 ** (attempt - 1)
        log.warning("download of %s failed (attempt %d/%d); retrying in %.0f s",
                    url, attempt, network.attempts, delay)
        time.sleep(delay)


def download_each(urls: Iterable[str], network: Network,
                  errors: list[str]) -> Iterator[tuple[str, BinaryIO]]:
    """``(url, its content in a temporary file, rewound)`` for each of ``urls`` in turn that
    downloads; a failed one is recorded in ``errors`` and the next tried. Stop iterating once
    one has given what you need (the temporary file is closed then)."""
    for url in urls:
        with tempfile.TemporaryFile() as sink:
            try:
                download(url, sink, network)
            except OSError as err:  # URLError, timeouts and connection errors are OSErrors
                errors.append(f"{url}: {err}")
                continue
            sink.seek(0)
            yield url, sink


def unavailable(what: str, mirror: Path | None, errors: list[str]) -> DataUnavailable:
    where = f"not in the mirror {mirror}" if mirror else f"{MIRROR_ENV} is not set"
    tried = "; ".join(errors) if errors else "no upstream source"
    return DataUnavailable(
        f"cannot obtain {what}: {where}, and upstream failed ({tried}).\n"
        "Fix it either way:\n"
        f"  1. offline: set {MIRROR_ENV} to a folder that holds {what} "
        f"(for example {MIRROR_ENV}=../shared/datasets), or\n"
        "  2. run on a machine with internet access so the upstream copy can be downloaded."
    )


def _verified(raw: RawFile, data: bytes, source: str) -> bytes:
    if raw.gzipped:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise DataError(f"{raw.mirror_path} from {source} is not valid gzip data ({err}); "
                            "delete the corrupted copy and run again.") from err
    actual = sha256_bytes(data)
    if actual != raw.sha256:
        raise ChecksumMismatch(raw.mirror_path, source, raw.sha256, actual)
    return data


def fetch_file(raw: RawFile, dest: str | os.PathLike, *, mirror: Path | None,
          network: Network = Network()) -> str:
    """Write the verified (decompressed) content of ``raw`` to ``dest``; return the source used."""
    dest = Path(dest)
    if dest.is_file() and sha256_file(dest) == raw.sha256:
        return "already present"
    if mirror is not None and (mirror / raw.mirror_path).is_file():
        source = str(mirror / raw.mirror_path)
        atomic_write_bytes(dest, _verified(raw, Path(source).read_bytes(), source))
        return source
    errors: list[str] = []
    for url, sink in download_each(raw.urls, network, errors):
        atomic_write_bytes(dest, _verified(raw, sink.read(), url))
        return url
    raise unavailable(raw.mirror_path, mirror, errors)
