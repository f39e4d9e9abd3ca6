"""pytei's private binding of TEI's engine (use ``pytei.LocalEngine``).

The extension module ``_native`` lies beside this file, with the native libraries its build
links at run time (ONNX Runtime, Intel OpenMP), which it finds through an ``$ORIGIN`` rpath.
"""

from pytei_native._native import NativeEngine, NativeError, build_info

__all__ = ["NativeEngine", "NativeError", "build_info"]
