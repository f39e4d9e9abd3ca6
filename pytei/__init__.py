"""pytei: build, patch, serve, query and benchmark Hugging Face text-embeddings-inference."""

from pytei._version import __version__

__all__ = ["__version__"]
