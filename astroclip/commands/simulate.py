"""``astroclip simulate``: write a mock DESI x Legacy Survey training set.

The options are those of `astroclip.simulate_survey` and of the mock survey's
`~astroclip.simulate.survey.SurveyConfig`, made from their declarations.
"""

__all__ = ["HELP", "FUNCTION", "add_arguments", "run"]

HELP = "Simulate a mock DESI x Legacy Survey survey (spectra, images, truth) to an HDF5 file."

#: The function this command runs (its ``**options`` are the fields of SurveyConfig).
FUNCTION = "astroclip.simulate.survey:simulate_survey"

#: SurveyConfig fields that are options of simulate_survey itself.
_SKIP_CONFIG = ("seed",)


def add_arguments(parser):
    """Options of ``astroclip simulate``."""
    from ..simulate.survey import SurveyConfig
    from ._options import add_function_options

    add_function_options(parser, FUNCTION, overrides={
        "workers": dict(help="worker processes (0: all cores; 1: in this process)")})
    group = parser.add_argument_group("mock survey (SurveyConfig)")
    add_function_options(group, SurveyConfig, skip=_SKIP_CONFIG)


def run(args):
    """Run ``astroclip simulate`` (a thin layer over `astroclip.simulate_survey`)."""
    from ..simulate import SurveyConfig, simulate_survey
    from ._options import function_kwargs

    kwargs = function_kwargs(args, FUNCTION)
    kwargs["workers"] = kwargs["workers"] or None           # 0: all cores
    config = function_kwargs(args, SurveyConfig, skip=_SKIP_CONFIG)
    path = simulate_survey(kwargs.pop("n"), **kwargs, **config)
    print(f"wrote {args.n} mock galaxies to {path}")
