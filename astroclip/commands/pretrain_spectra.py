"""``astroclip pretrain-spectra``: masked-segment pretraining of the spectrum transformer.

The options are those of `astroclip.training.spectra.pretrain_spectra` and of
`astroclip.training.options.RunOptions`, made from their declarations.
"""

__all__ = ["HELP", "FUNCTION", "SKIP", "add_arguments", "run"]

HELP = "Pretrain the spectrum transformer by filling masked segments (Lightning, resumable)."

#: The function this command runs, and its parameters that are not options.
FUNCTION = "astroclip.training.spectra:pretrain_spectra"
SKIP = ("val_data",)


def add_arguments(parser):
    from ..models.presets import SPECTRUM_PRESETS
    from ._options import add_function_options, add_run_options

    add_function_options(parser, FUNCTION, skip=SKIP, overrides={
        "preset": dict(choices=sorted(SPECTRUM_PRESETS))})
    add_run_options(parser)


def run(args):
    from ..training.spectra import pretrain_spectra
    from ._options import function_kwargs, run_kwargs

    kwargs = function_kwargs(args, FUNCTION, skip=SKIP)
    pretrain_spectra(kwargs.pop("data"), **kwargs, **run_kwargs(args))
    print(f"model written to {args.out}")
