"""One way to run a function over many tasks: in order, on a process pool, with a progress bar."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor


def ordered_map(
    function: Callable,
    tasks: Sequence,
    *,
    workers: int | None = None,
    desc: str = "",
    unit: str = "it",
    progress: bool = True,
    chunksize: int = 1,
    min_tasks: int = 2,
) -> Iterator:
    """Yield ``function(task)`` for every task, in task order.

    ``workers`` defaults to every core; 1 (or fewer than ``min_tasks`` tasks) runs in this
    process. The pool is shut down, pending work cancelled, when the caller stops iterating.
    ``function`` and the tasks must be picklable for the pool.
    """
    from tqdm.auto import tqdm

    workers = workers or os.cpu_count() or 1
    bar = dict(total=len(tasks), desc=desc, unit=unit, disable=not progress)
    if workers == 1 or len(tasks) < min_tasks:
        yield from tqdm(map(function, tasks), **bar)
        return
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        results: Iterable = pool.map(function, tasks, chunksize=chunksize)
        yield from tqdm(results, **bar)
    finally:
        pool.shutdown(cancel_futures=True)
