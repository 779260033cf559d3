"""Where models run: the device and dtype rules every model resource shares.

torch is imported inside the functions: the resources that use them are built while the Dagster definitions load,
which must not import torch (a code server would pay its import on every start)."""

from typing import Any

# dtype names -> attribute of the torch module
_DTYPES = {
    "fp16": "float16",
    "float16": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp32": "float32",
    "float32": "float32",
}


def resolve_device(device: str) -> str:
    """ "auto": cuda when available, else cpu; anything else is used as given."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    """ "auto": fp16 on GPU, fp32 on CPU (fp16 matmuls on CPU are slow and lossy); otherwise the named dtype
    (a torch.dtype)."""
    import torch

    if dtype == "auto":
        return torch.float32 if device.startswith("cpu") else torch.float16
    try:
        return getattr(torch, _DTYPES[dtype])
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)}") from None


def use_fp16(dtype: str, device: str) -> bool:
    """Whether a model that runs fp16 through autocast should do so (never on CPU)."""
    import torch

    return not device.startswith("cpu") and resolve_dtype(dtype, device) == torch.float16
