"""rsna_lumbar.parallel.ordered_map: order, the in-process path, and no fork deadlock."""

import subprocess
import sys
import textwrap

from rsna_lumbar.parallel import ordered_map


def test_results_come_back_in_task_order_from_the_pool_and_in_process():
    tasks = list(range(7))
    pooled = list(ordered_map(abs, [-t for t in tasks], workers=2, progress=False))
    inline = list(ordered_map(abs, [-t for t in tasks], workers=1, progress=False))
    assert pooled == inline == tasks


def test_workers_do_not_inherit_the_callers_opencv_threads():
    # CI hung for 90 min here: a forked worker blocked on a lock of OpenCV's thread pool that the
    # parent had started. Run in a fresh interpreter so a regression fails on the timeout.
    script = textwrap.dedent("""
        import cv2, numpy as np
        from rsna_lumbar.parallel import ordered_map
        image = np.random.rand(2048, 2048).astype(np.float32)
        for _ in range(3):
            cv2.GaussianBlur(image, (31, 31), 5)          # starts OpenCV's worker threads
        # a worker that sizes OpenCV's pool (as synth.generate.make_study does) must not hang
        out = list(ordered_map(cv2.setNumThreads, [1, 1, 1, 1], workers=2, progress=False))
        print(len(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "4"


def test_a_pool_that_cannot_start_falls_back_to_this_process():
    # A caller fed on stdin: forkserver workers cannot re-import its __main__, the pool breaks.
    script = textwrap.dedent("""
        from rsna_lumbar.parallel import ordered_map
        print(list(ordered_map(abs, [-1, -2, -3], workers=2, progress=False)))
    """)
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 2, 3]"
    assert "running the 3 remaining tasks in this process" in done.stderr
