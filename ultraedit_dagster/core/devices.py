"""Where models run: the device and dtype rules every model resource shares."""

import torch

_DTYPES = {
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


def resolve_device(device: str) -> str:
    """ "auto": cuda when available, else cpu; anything else is used as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """ "auto": fp16 on GPU, fp32 on CPU (fp16 matmuls on CPU are slow and lossy); otherwise the named dtype."""
    if dtype == "auto":
        return torch.float32 if device.startswith("cpu") else torch.float16
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)}") from None


def use_fp16(dtype: str, device: str) -> bool:
    """Whether a model that runs fp16 through autocast should do so (never on CPU)."""
    return not device.startswith("cpu") and resolve_dtype(dtype, device) == torch.float16
