"""Inference precision and runtime: ``precision="auto"|"fp32"|"bf16"|"fp16"|"int8"``, ``backend="torch"|"onnx"``.

One vocabulary for ``MedeirEncoder``, ``MedeirReranker``, the LlamaIndex and Haystack
components and ``medeir evaluate --precision/--backend``.

The embedders default to ``"auto"``: bf16 autocast where the hardware runs bf16 natively
(a GPU with bf16, a CPU with AVX512-BF16 or AMX), fp32 everywhere else, fp32 for the ONNX
graph. Why, measured with ``medeir evaluate`` and ``benchmarks/encode_throughput.py`` on the
shipped model: bf16 scored the same nDCG@10 as fp32 on SciFact and MedQuAD QA to the
hundredth, and encoded 1.6x (Zen 4) to 2.6x (Xeon with AMX) faster; on a CPU without native
bf16, oneDNN emulates it and it is slower than fp32, so ``auto`` keeps fp32 there. int8 lost
0.7 / 1.4 points, more than the 0.5 a default may lose, so it stays opt-in. The reranker
keeps ``fp32`` by default: no shipped reranker's bf16 quality has been measured.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/inference/precision.py``.
"""

from __future__ import annotations

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


def resolve_precision(precision: str, backend: str, device: torch.device) -> str:
    """The concrete precision ``precision`` means on ``device``: ``"auto"`` becomes ``"bf16"``
    where bf16 runs natively on the torch backend, ``"fp32"`` otherwise; other names are returned as given."""
    if precision != "auto":
        return precision
    if backend == "torch" and device.type in ("cpu", "cuda") and native_bf16_reason(device) is None:
        return "bf16"
    return "fp32"


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
    "BACKENDS",
    "DEFAULT_PRECISION",
    "ONNX_PRECISIONS",
    "PRECISIONS",
    "autocast_dtype",
    "bf16_unsupported_reason",
    "check_device",
    "check_options",
    "default_device_for",
    "native_bf16_reason",
    "quantize_int8",
    "resolve_precision",
]
