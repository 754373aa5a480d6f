"""One progress style for every long loop: a tqdm bar on stderr (done, rate, ETA).

Stages call :func:`progress` around their outer loop (randomization stages, images, models);
the engine's :class:`~replication.attribution.Explainer` uses the same bar for its batches, and
training for its steps. A bar appears only for a loop still running after a few seconds and
refreshes at most that often, so logs captured by ``dvc repro`` stay short.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
REFRESH_SECONDS = 5.0  # a shorter loop shows no bar


def progress(items: Iterable[T], description: str, *, total: int | None = None,
             unit: str = "step") -> Iterator[T]:
    """``items``, with a progress bar named ``description`` on stderr."""
    from tqdm.auto import tqdm

    yield from tqdm(items, desc=description, total=total, unit=unit, mininterval=REFRESH_SECONDS,
                    delay=REFRESH_SECONDS, leave=False, dynamic_ncols=True)


__all__ = ["progress"]
