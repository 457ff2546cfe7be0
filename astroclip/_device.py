"""The one device helper of the package."""

import torch

from .exceptions import DeviceUnavailableError, InputError

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
    InputError
        (a `ValueError`) If the device string is not understood.
    DeviceUnavailableError
        (a `RuntimeError`) If the requested accelerator (or that device number)
        is not available on this machine.

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
            raise InputError(
                f"device={device!r} is not a device name; use 'auto', 'cpu', 'cuda', "
                "'cuda:N' or 'mps' (--device auto on the command line)") from exc
    fix = "use device='auto' or 'cpu' (--device auto or --device cpu on the command line)"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(f"device={device!r} was requested but CUDA is not "
                                         f"available here; {fix}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"device={device!r} was requested but this machine "
                                         f"has {torch.cuda.device_count()} CUDA device(s) "
                                         f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); "
                                         f"{fix}")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceUnavailableError(f"device={device!r} was requested but MPS is not "
                                         f"available here; {fix}")
    return dev
