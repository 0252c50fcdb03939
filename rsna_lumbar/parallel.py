"""One way to run a function over many tasks: in order, on a process pool, with a progress bar."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor

# Workers start from a clean server process, never by forking the caller: a fork copies the
# caller's thread pools (OpenCV, OpenMP, torch) mid-lock, and the child then waits forever on a
# lock no thread will release (seen with cv2 after a test had used it).
_CONTEXT = "forkserver"


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
    ``function`` must be importable (a module-level function) and the tasks picklable; workers
    import what they need themselves.
    """
    from tqdm.auto import tqdm

    workers = workers or os.cpu_count() or 1
    bar = dict(total=len(tasks), desc=desc, unit=unit, disable=not progress)
    if workers == 1 or len(tasks) < min_tasks:
        yield from tqdm(map(function, tasks), **bar)
        return
    pool = ProcessPoolExecutor(max_workers=workers,
                               mp_context=multiprocessing.get_context(_CONTEXT))
    try:
        results: Iterable = pool.map(function, tasks, chunksize=chunksize)
        yield from tqdm(results, **bar)
    finally:
        pool.shutdown(cancel_futures=True)
