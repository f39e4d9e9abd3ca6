# The extension's interface (tei_fork/engine/python/src/lib.rs), checked against the built module
# by mypy's stubtest in the upstream tier (tests/integration/test_engine_stub.py).
from typing import Any, final

from typing_extensions import TypeAlias

__all__ = ["NativeEngine", "NativeError", "build_info"]

_Timing: TypeAlias = tuple[int, int, int, int]  # prompt_tokens, tokenization_ns, queue_ns, inference_ns

class NativeError(Exception): ...

@final
class NativeEngine:
    def __new__(
        cls,
        model_dir: str,
        *,
        served_model_name: str | None = None,
        dtype: str | None = None,
        pooling: str | None = None,
        tokenization_workers: int | None = None,
        max_concurrent_requests: int = 512,
        max_batch_tokens: int = 16384,
        max_batch_requests: int | None = None,
        max_client_batch_size: int = 32,
        auto_truncate: bool = True,
        default_prompt: str | None = None,
        default_prompt_name: str | None = None,
        dense_path: str | None = None,
    ) -> NativeEngine: ...
    def info(self) -> str: ...
    def health(self) -> bool: ...
    def metrics(self) -> str: ...
    def embed(
        self,
        items: list[Any],
        *,
        truncate: bool | None = None,
        truncation_direction: str | None = None,
        prompt_name: str | None = None,
        normalize: bool = True,
        dimensions: int | None = None,
    ) -> tuple[bytes, int, int, list[_Timing]]: ...
    def embed_sparse(
        self,
        items: list[Any],
        *,
        truncate: bool | None = None,
        truncation_direction: str | None = None,
        prompt_name: str | None = None,
    ) -> tuple[list[tuple[bytes, bytes]], list[_Timing]]: ...
    def embed_all(
        self,
        items: list[Any],
        *,
        truncate: bool | None = None,
        truncation_direction: str | None = None,
        prompt_name: str | None = None,
    ) -> tuple[list[tuple[bytes, int, int]], list[_Timing]]: ...
    def predict(
        self,
        items: list[Any],
        *,
        truncate: bool | None = None,
        truncation_direction: str | None = None,
        raw_scores: bool = False,
    ) -> tuple[bytes, int, int, list[_Timing]]: ...
    def tokenize(
        self, texts: list[str], *, add_special_tokens: bool = True, prompt_name: str | None = None
    ) -> list[list[tuple[int, str, bool, int | None, int | None]]]: ...
    def decode(self, ids: list[list[int]], *, skip_special_tokens: bool = True) -> list[str]: ...
    def close(self) -> None: ...

def build_info() -> dict[str, str | None]: ...
