"""``astroclip align``: contrastive alignment of an image and a spectrum encoder.

The options are those of `astroclip.training.align.align` and of
`astroclip.training.options.RunOptions`, made from their declarations.
"""

__all__ = ["HELP", "FUNCTION", "SKIP", "add_arguments", "run"]

HELP = "Align image and spectrum encoders with the CLIP loss (Lightning, multi-GPU, resumable)."

#: The function this command runs, and its parameters that are not options.
FUNCTION = "astroclip.training.align:align"
SKIP = ("val_data",)


def _freeze(value):
    """'paper', 'none', or 'image=backbone,spectrum=none'."""
    if "=" not in value:
        return value
    out = {}
    for part in value.split(","):
        side, _, level = part.partition("=")
        out[side.strip()] = level.strip()
    return out


def add_arguments(parser):
    from ._options import add_function_options, add_run_options

    # preset: a CLIP preset or a trained aligned model, resolved by the model factory
    add_function_options(parser, FUNCTION, skip=SKIP, overrides={
        "preset": dict(type=str),
        "freeze": dict(type=_freeze, metavar="POLICY"),
        "spectrum_model": dict(type=str), "image_model": dict(type=str)})
    add_run_options(parser)


def run(args):
    from ..training.align import align
    from ._options import function_kwargs, run_kwargs

    kwargs = function_kwargs(args, FUNCTION, skip=SKIP)
    align(kwargs.pop("data"), **kwargs, **run_kwargs(args))
    print(f"aligned model written to {args.out}")
