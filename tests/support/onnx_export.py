"""The torch-free BERT / XLM-RoBERTa ONNX exporter, for the tests (it lives in the package:
:mod:`pytei.models.onnx_export`)."""

from pytei.models.onnx_export import *
from pytei.models.onnx_export import __all__ as __all__  # noqa: PLC0414
