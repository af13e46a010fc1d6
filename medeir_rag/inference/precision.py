"""Inference precision and runtime: ``precision="auto"|"fp32"|"bf16"|"fp16"|"int8"``, ``backend="torch"|"onnx"``.

One vocabulary for ``MedeirEncoder``, ``MedeirReranker``, the LlamaIndex and Haystack
components and ``medeir evaluate --precision/--backend``.

The embedders default to ``"auto"``: bf16 autocast where bf16 is measurably faster (a GPU
with bf16; a CPU with AVX512-BF16 or AMX whose bf16 matrix products a probe, run once, finds
at least 1.2x faster than fp32), fp32 everywhere else and for the ONNX graph. bf16 scored the
same nDCG@10 as fp32 on the shipped model and encoded 1.6x (Zen 4) to 2.6x (Xeon, AMX) faster;
but on a Xeon whose AMX a virtual machine hid, bf16 products ran at 0.6x fp32 despite the
AVX512-BF16 flag, hence the probe. int8 lost more than the 0.5 points a default may lose. The
rerankers keep ``fp32`` (no shipped reranker's bf16 quality is measured).

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/inference/precision.py``.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings

import torch

from medeir_rag.errors import InvalidArgumentError

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
DEFAULT_PRECISION = "auto"  # the embedders' default; see the module docstring for the measurements
BACKENDS = ("torch", "onnx")
ONNX_PRECISIONS = ("fp32", "int8")  # the exported graphs; "auto" runs the fp32 one
DTYPE_TO_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_options(precision: str, backend: str, *, dtype: str | None = None, owner: str = "MedeirEncoder") -> str:
    """The precision to use, once ``precision``, ``backend`` and the deprecated ``dtype`` are valid names.

    Cheap (nothing is loaded); the messages name the argument.

    Raises:
        InvalidArgumentError: an unknown name, ``dtype`` contradicting ``precision``, or a
            precision the backend has no graph for (``bf16``/``fp16`` with ``onnx``).
    """
    if dtype is not None:
        if dtype not in DTYPE_TO_PRECISION:
            raise InvalidArgumentError(
                f"dtype must be one of {tuple(DTYPE_TO_PRECISION)} (deprecated: use precision=...), got {dtype!r}"
            )
        mapped = DTYPE_TO_PRECISION[dtype]
        if precision not in ("auto", mapped):
            raise InvalidArgumentError(
                f"dtype={dtype!r} and precision={precision!r} disagree; pass only precision (dtype is deprecated)"
            )
        warnings.warn(
            f"{owner}(dtype={dtype!r}) is deprecated; use precision={mapped!r}", DeprecationWarning, stacklevel=3
        )
        precision = mapped
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "onnx" and precision not in (*ONNX_PRECISIONS, "auto"):
        raise InvalidArgumentError(
            f"precision={precision!r} is not available with backend='onnx' (exported graphs: {ONNX_PRECISIONS})"
        )
    return precision


def bf16_unsupported_reason(device: torch.device) -> str | None:
    """Why ``bf16`` cannot run on ``device`` (``None`` when it can)."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else f"the GPU {torch.cuda.get_device_name(device)} has no bf16"
    if device.type == "cpu":
        if not torch.backends.mkldnn.is_available():
            return "this torch build has no oneDNN (mkldnn), which runs bf16 on CPU"
        supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        if supported is not None and not supported():
            return (f"this CPU (torch capability {torch.backends.cpu.get_cpu_capability()}) has no bf16 support "
                    "in oneDNN (needs AVX512-BF16/AMX or AVX512BW/VL/DQ)")
        return None
    return None  # mps and others: left to torch.autocast


def native_bf16_reason(device: torch.device) -> str | None:
    """Why bf16 would not be *faster* than fp32 on ``device`` (``None`` when it runs natively).

    oneDNN also runs bf16 on AVX-512 CPUs without the BF16 instructions, by converting to
    fp32 around every product: it works but is slower than fp32, so ``"auto"`` asks for the
    instructions themselves (AVX512-BF16 or AMX tiles), read from torch's CPU feature probe.
    """
    reason = bf16_unsupported_reason(device)
    if reason or device.type != "cpu":
        return reason
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probe is not None and probe() for probe in probes):
        return None
    return f"this CPU (torch capability {torch.backends.cpu.get_cpu_capability()}) has no AVX512-BF16 or AMX"


AUTO_BF16_MIN_SPEEDUP = 1.2  # bf16 over fp32 on the CPU probe before "auto" picks bf16


@functools.cache
def cpu_bf16_speedup(threads: int) -> float:
    """bf16 autocast over fp32 throughput of a (1024 x 256) @ (256 x 1024) product on this CPU.

    Why a probe and not the CPU flags alone: on one machine of this work (a Xeon with
    AVX512-BF16 whose AMX tiles the virtual machine hid) oneDNN's bf16 products ran at 0.6x
    fp32, while the flags promised a speed-up; on Zen 4 and on a Xeon with AMX they ran 2x to
    6x faster. 0.3 s measured here (mostly oneDNN building its bf16 kernels, which the first
    bf16 encode would pay anyway), once per process and thread count (``threads`` is the cache key).
    """
    del threads  # the cache key: torch.get_num_threads() when asked
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(1024, 256, generator=generator)
    linear = torch.nn.Linear(256, 1024)

    def seconds(dtype: torch.dtype | None) -> float:
        context = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.inference_mode(), context:
            linear(a)  # warm-up: oneDNN builds its kernels on the first call
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                linear(a)
                best = min(best, time.perf_counter() - start)
        return best

    return seconds(None) / seconds(torch.bfloat16)


def resolve_precision(precision: str, backend: str, device: torch.device) -> str:
    """The concrete precision ``precision`` means on ``device``; names other than ``"auto"`` are returned as given.

    ``"auto"`` is ``"bf16"`` on the torch backend on a GPU with bf16, and on a CPU with native
    bf16 instructions where ``cpu_bf16_speedup`` measures at least ``AUTO_BF16_MIN_SPEEDUP``;
    ``"fp32"`` everywhere else (the ONNX graph included).
    """
    if precision != "auto":
        return precision
    if backend != "torch" or device.type not in ("cpu", "cuda") or native_bf16_reason(device) is not None:
        return "fp32"
    if device.type == "cpu" and cpu_bf16_speedup(torch.get_num_threads()) < AUTO_BF16_MIN_SPEEDUP:
        return "fp32"
    return "bf16"


def check_device(precision: str, backend: str, device: torch.device) -> None:
    """Refuse, before any weights load, a precision the device cannot run (messages name the argument)."""
    if backend != "torch":
        return
    if precision == "int8" and device.type != "cpu":
        raise InvalidArgumentError(
            f"precision='int8' (dynamic quantisation) runs on CPU only, not on device {str(device)!r}; "
            "use precision='bf16' or 'fp16' there"
        )
    if precision == "bf16":
        reason = bf16_unsupported_reason(device)
        if reason:
            raise InvalidArgumentError(f"precision='bf16' cannot run here: {reason}; use precision='fp32' or 'int8'")


def default_device_for(precision: str, backend: str) -> torch.device:
    """The device used when none is given: CUDA when visible, except for CPU-only options
    (``int8`` on torch) and for ``onnx`` without onnxruntime's CUDA provider."""
    if backend == "onnx":
        from medeir_rag.inference.onnx_backend import default_onnx_device

        return default_onnx_device()
    if precision == "int8" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The ``torch.autocast`` dtype of ``precision`` (``None``: no autocast)."""
    return AUTOCAST_DTYPES.get(precision)


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation of every ``nn.Linear`` of ``model``, in place (CPU); returns ``model``."""
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated upstream (torchao), still in 2.13
        warnings.simplefilter("ignore")
        try:
            from torch.ao.quantization import quantize_dynamic
        except ImportError as error:
            raise InvalidArgumentError(
                f"precision='int8' needs torch.ao.quantization.quantize_dynamic, which torch {torch.__version__} "
                "lacks; use backend='onnx' with precision='int8' (medeir export --onnx)"
            ) from error
        return quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


__all__ = [
    "AUTO_BF16_MIN_SPEEDUP",
    "BACKENDS",
    "DEFAULT_PRECISION",
    "ONNX_PRECISIONS",
    "PRECISIONS",
    "autocast_dtype",
    "bf16_unsupported_reason",
    "check_device",
    "check_options",
    "cpu_bf16_speedup",
    "default_device_for",
    "native_bf16_reason",
    "quantize_int8",
    "resolve_precision",
]
