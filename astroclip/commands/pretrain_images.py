"""``astroclip pretrain-images``: MoCo v2 self-supervised pretraining of an image encoder.

The options are those of `astroclip.training.images.pretrain_images` and of
`astroclip.training.options.RunOptions`, made from their declarations.
"""

__all__ = ["HELP", "FUNCTION", "SKIP", "add_arguments", "run"]

HELP = "Pretrain an image encoder on galaxy cutouts with MoCo v2 (Lightning, resumable)."

#: The function this command runs, and its parameters that are not options.
FUNCTION = "astroclip.training.images:pretrain_images"
SKIP = ("val_data",)


def add_arguments(parser):
    from ..models.presets import IMAGE_PRESETS
    from ._options import add_function_options, add_run_options

    add_function_options(parser, FUNCTION, skip=SKIP, overrides={
        "preset": dict(choices=sorted(IMAGE_PRESETS))})
    add_run_options(parser)


def run(args):
    from ..training.images import pretrain_images
    from ._options import function_kwargs, run_kwargs

    kwargs = function_kwargs(args, FUNCTION, skip=SKIP)
    pretrain_images(kwargs.pop("data"), **kwargs, **run_kwargs(args))
    print(f"image encoder written to {args.out}")
