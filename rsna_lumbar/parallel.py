"""One way to run a function over many tasks: in order, on a process pool, with a progress bar."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

LOGGER = logging.getLogger(__name__)

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
    initializer: Callable | None = None,
    initargs: tuple = (),
) -> Iterator:
    """Yield ``function(task)`` for every task, in task order.

    ``workers`` defaults to every core; 1 (or fewer than ``min_tasks`` tasks) runs in this
    process. The pool is shut down, pending work cancelled, when the caller stops iterating.
    ``function`` must be importable (a module-level function) and the tasks picklable; workers
    import what they need themselves. If the pool breaks (a worker killed, or workers that
    cannot start, e.g. a caller whose ``__main__`` cannot be re-imported), the tasks not yet
    returned run in this process instead, with a warning: slower, never lost.

    ``initializer(*initargs)`` runs once in every worker before its first task, and in this
    process before tasks run here: the way to hand each worker a large read-only object once
    rather than with every task.
    """
    from tqdm.auto import tqdm

    workers = workers or os.cpu_count() or 1
    bar = dict(total=len(tasks), desc=desc, unit=unit, disable=not progress)
    if workers == 1 or len(tasks) < min_tasks:
        if initializer is not None:
            initializer(*initargs)
        yield from tqdm(map(function, tasks), **bar)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(_CONTEXT),
                               initializer=initializer, initargs=initargs)  # fmt: skip
    done = 0
    with tqdm(**bar) as progress_bar:
        try:
            for result in pool.map(function, tasks, chunksize=chunksize):
                done += 1
                progress_bar.update()
                yield result
        except BrokenProcessPool as error:
            LOGGER.warning("process pool broke (%s); running the %d remaining tasks in this "
                           "process", error, len(tasks) - done)  # fmt: skip
            if initializer is not None:
                initializer(*initargs)
            for task in tasks[done:]:
                progress_bar.update()
                yield function(task)
        finally:
            pool.shutdown(cancel_futures=True)
