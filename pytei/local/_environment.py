"""What TEI's in-process engine reads from the environment when it starts (patches 0009 and
0010), set for one engine at a time by :class:`pytei.local.engine.LocalEngine`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = [
    "CALLER_TOKENIZERS_ENV",
    "IN_PROCESS_BATCH_WAIT_US",
    "IN_PROCESS_CALLER_TOKENIZERS",
    "engine_environment",
]

# In-process callers are closed loops (a thread waits for its answer before it sends again), so
# batches wait this long for the callers just answered (patch 0009): two threads then share
# forward passes instead of alternating in batches of one (benchmarks/bench_inprocess.py).
IN_PROCESS_BATCH_WAIT_US = 500
# Tokenizers TEI's engine sets aside (patch 0010) so that a one-input call tokenizes on the
# calling thread, not through a worker: as many Python threads as this call at once without
# waiting on a worker's wake-up. TEI_CALLER_TOKENIZERS overrides it (0: always the workers).
CALLER_TOKENIZERS_ENV = "TEI_CALLER_TOKENIZERS"
IN_PROCESS_CALLER_TOKENIZERS = 4


@contextlib.contextmanager
def engine_environment(batch_wait_us: int | None) -> Iterator[None]:
    """TEI's engine reads TEI_BATCH_WAIT_US and TEI_CALLER_TOKENIZERS when it starts: set them
    for this engine only (an explicit argument wins over the environment, the environment over
    pytei's defaults), and put the process environment back as it was."""
    from pytei.serving.backends import BATCH_WAIT_ENV  # noqa: PLC0415

    wanted = {
        BATCH_WAIT_ENV: None if batch_wait_us is None else str(batch_wait_us),
        CALLER_TOKENIZERS_ENV: None,
    }
    defaults = {
        BATCH_WAIT_ENV: str(IN_PROCESS_BATCH_WAIT_US),
        CALLER_TOKENIZERS_ENV: str(IN_PROCESS_CALLER_TOKENIZERS),
    }
    before = {name: os.environ.get(name) for name in wanted}
    for name, value in wanted.items():
        if value is not None or before[name] is None:
            os.environ[name] = value if value is not None else defaults[name]
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
