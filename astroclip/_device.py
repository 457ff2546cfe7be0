"""The one device helper of the package."""

import torch

__all__ = ["resolve_device"]


def resolve_device(device="auto"):
    """Turn a device request into a `torch.device`.

    Parameters
    ----------
    device : str or `torch.device`, optional
        ``"auto"`` picks CUDA, then Apple MPS, then the CPU.  Anything else is
        passed to `torch.device` and checked for availability.

    Returns
    -------
    `torch.device`

    Raises
    ------
    ValueError
        If the device string is not understood.
    RuntimeError
        If the requested accelerator is not available on this machine.

    Examples
    --------
    >>> from astroclip._device import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        dev = device
    elif device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(
                f"device={device!r} is not a device name; use 'auto', 'cpu', 'cuda', "
                "'cuda:N' or 'mps'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but CUDA is not available "
                           "here; use device='auto' or 'cpu'")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise RuntimeError(f"device={device!r} was requested but MPS is not available "
                               "here; use device='auto' or 'cpu'")
    return dev
