"""TEI's engine inside this process: :class:`LocalEngine` (and :class:`AsyncLocalEngine` for
asyncio), interchangeable with :class:`pytei.Client`.  Needs ``pytei build --engine``."""

from pytei.local.aio import AsyncLocalEngine
from pytei.local.engine import LocalEngine

__all__ = ["AsyncLocalEngine", "LocalEngine"]
