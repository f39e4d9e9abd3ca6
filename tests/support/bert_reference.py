"""The numpy reference of BERT / XLM-RoBERTa, for the tests (it lives in the package:
:mod:`pytei.models.weights` reads models, :mod:`pytei.models.reference` runs them)."""

from pytei.models.reference import *
from pytei.models.reference import __all__ as _forward
from pytei.models.weights import *
from pytei.models.weights import __all__ as _weights

__all__ = [*_forward, *_weights]  # noqa: PLE0604
