"""Splitting one call into several requests: bounded, order-preserving, fail-fast.

- At most ``max_concurrency`` requests are in flight; the next batch is submitted only when
  one finishes (a sliding window), so nothing waits in a queue that would have to be
  cancelled and memory stays bounded.
- Results come back in input order whatever order the requests finish in.
- The first failure (lowest batch index among those finished at that moment) is raised at
  once with ``batch_index`` set; no further batch is started, batches in flight are told to
  give up retrying, and nothing is silently dropped (there is no partial result).
- ``KeyboardInterrupt`` (or any exception in the waiting thread) does the same: the worker
  threads finish only the requests already on the wire, then exit.
- A single batch runs in the calling thread: no pool, no extra latency for small calls.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from pytei.errors import TEIError

__all__ = ["chunk_sizes", "run_batches"]

R = TypeVar("R")


def chunk_sizes(total: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(total)`` in slices of at most ``size``."""
    if size < 1:
        raise ValueError("batch size must be >= 1")
    return [(start, min(start + size, total)) for start in range(0, total, size)]


@contextlib.contextmanager
def _progress_bar(total: int, description: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda _n: None
        return
    # imported only when asked for: keeps `import pytei` fast
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _tag(error: BaseException, index: int, count: int, span: tuple[int, int]) -> BaseException:
    where = f"batch {index} of {count} (inputs {span[0]}..{span[1] - 1})"
    if isinstance(error, TEIError):
        error.batch_index = index
        error.message = f"{where}: {error.message}"
        error.args = (error.message,)
    else:
        error.add_note(f"raised by {where}")
    return error


def run_batches(
    call: Callable[[int, threading.Event], R],
    spans: Sequence[tuple[int, int]],
    *,
    max_concurrency: int,
    progress: bool = False,
    description: str = "pytei",
) -> list[R]:
    """Run ``call(batch_index, cancel)`` for every span; return the results in span order.

    ``spans`` are the ``(start, stop)`` input ranges of the batches (for the progress bar and
    the error message).  ``call`` should stop retrying once ``cancel`` is set.
    """
    count = len(spans)
    cancel = threading.Event()
    if count == 1 and not progress:
        return [call(0, cancel)]
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be >= 1")
    results: dict[int, R] = {}
    pending: dict[Future[R], int] = {}
    executor = ThreadPoolExecutor(max_workers=min(max_concurrency, count), thread_name_prefix="pytei-batch")
    submitted = 0
    try:
        with _progress_bar(spans[-1][1] - spans[0][0], description, progress) as advance:
            while submitted < count or pending:
                while submitted < count and len(pending) < max_concurrency:
                    pending[executor.submit(call, submitted, cancel)] = submitted
                    submitted += 1
                # a timeout, so Ctrl-C is seen promptly even where lock waits are not interruptible
                done, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: pending[f]):
                    index = pending.pop(future)
                    error = future.exception()
                    if error is not None:
                        raise _tag(error, index, count, spans[index])
                    results[index] = future.result()
                    advance(spans[index][1] - spans[index][0])
    except BaseException:
        cancel.set()
        for future in pending:
            future.cancel()
        raise
    finally:
        # wait=False: a failure or Ctrl-C is reported now; requests already on the wire end on
        # their own (their threads then exit, as no further work was queued).
        executor.shutdown(wait=False, cancel_futures=True)
    return [results[i] for i in range(count)]
