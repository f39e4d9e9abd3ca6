"""router_error: the cause a router prints when it exits, in pytei's one-line error."""

from __future__ import annotations

from pytei.serving.spec import router_error

# TEI 1.9.3 on a CPU, given --dtype float16 for an ONNX model (as its log has it)
ORT_DTYPE = """\
{"timestamp":"2026-12-01T11:21:06.012481Z","level":"ERROR","message":"Could not start Candle backend"}
Error: Could not create backend

Caused by:
    Could not start backend: Could not start a suitable backend

Stack backtrace:
   0: text_embeddings_router::main::{{closure}}
"""

# A router built with flash-attention head dims 32,64, given a model of head dim 128 (H200)
FLASH_HEAD_DIM = """\
2026-12-01T11:42:41.573997Z  INFO text_embeddings_backend_candle: Starting FlashBert model on Cuda(CudaDevice(DeviceId(1)))
Error: Model backend is not healthy

Caused by:
    flash-attn was built without head dim 128 (the model's 128): rebuild the router for this model (pytei build --flash-attn-for MODEL, or without a kernel selection)
       0: <unknown>
       1: <unknown>

Stack backtrace:
   0: <unknown>
"""


def test_the_cause_chain_becomes_one_line() -> None:
    assert router_error(ORT_DTYPE) == "Could not create backend: Could not start backend: Could not start a suitable backend"
    assert router_error(FLASH_HEAD_DIM) == (
        "Model backend is not healthy: flash-attn was built without head dim 128 (the model's 128): rebuild the "
        "router for this model (pytei build --flash-attn-for MODEL, or without a kernel selection)"
    )


def test_a_rejected_argument() -> None:
    # TEI's CUDA build, given --dtype bfloat16 (H200)
    clap = "error: invalid value 'bfloat16' for '--dtype <DTYPE>'\n  [possible values: float16, float32]\n"
    assert router_error(clap) == "invalid value 'bfloat16' for '--dtype <DTYPE>'"


def test_no_error_line_no_cause() -> None:
    assert router_error("INFO Starting model backend\nkilled\n") is None
    assert router_error("Error: Address already in use (os error 98)\n") == "Address already in use (os error 98)"


def test_a_long_cause_is_cut() -> None:
    text = router_error("Error: " + "x" * 1000)
    assert text is not None and len(text) == 400 and text.endswith("...")
