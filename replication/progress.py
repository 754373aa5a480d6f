"""One progress style for every long loop: a tqdm bar on stderr (done, rate, ETA).

Stages call :func:`progress` around their outer loop (randomization stages, images, models);
the engine's :class:`~replication.attribution.Explainer` uses the same bar for its batches. The
bar refreshes at most every few seconds, so logs captured by ``dvc repro`` stay short.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], description: str, *, total: int | None = None,
             unit: str = "step") -> Iterator[T]:
    """``items``, with a progress bar named ``description`` on stderr."""
    from tqdm.auto import tqdm

    yield from tqdm(items, desc=description, total=total, unit=unit, mininterval=5.0,
                    leave=False, dynamic_ncols=True)


__all__ = ["progress"]
