"""The training commands' options are made from the functions they run (declared once)."""

import argparse
import dataclasses
import inspect
import sys

import pytest

from astroclip.cli import build_parser
from astroclip.commands import _options
from astroclip.commands import align as align_cmd
from astroclip.commands import pretrain_images as images_cmd
from astroclip.commands import pretrain_spectra as spectra_cmd
from astroclip.training.options import RENAMED, RunOptions, split_batch

COMMANDS = {"pretrain-spectra": spectra_cmd, "pretrain-images": images_cmd, "align": align_cmd}


def _sub(name):
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _dests(parser):
    return {a.dest for a in parser._actions} - {"help", "debug", "_run"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_parameter_and_run_option_is_an_option(name):
    module = COMMANDS[name]
    func = _options.function_spec(module.FUNCTION)
    params = {n for n, _, is_option in func[0] if is_option} - set(module.SKIP)
    run = {f.name for f in dataclasses.fields(RunOptions) if f.metadata["cli"]}
    assert _dests(_sub(name)) == params | run


def test_simulate_options_are_simulate_survey_and_survey_config():
    from astroclip.commands import simulate as simulate_cmd
    from astroclip.simulate.survey import SurveyConfig

    func = {n for n, _, is_option in _options.function_spec(simulate_cmd.FUNCTION)[0]
            if is_option}
    config = {f.name for f in dataclasses.fields(SurveyConfig)}
    p = _sub("simulate")
    assert _dests(p) == func | config
    args = p.parse_args(["--n", "5", "--out", "m.h5", "--zmax", "0.3", "--split", "0.5", "0.25",
                         "0.25", "--continuum", "kcorrect", "--workers", "0"])
    cfg = _options.function_kwargs(args, SurveyConfig, skip=("seed",))
    assert cfg["zmax"] == 0.3 and cfg["split"] == (0.5, 0.25, 0.25) and cfg["rmin"] is None
    SurveyConfig(**cfg)                                            # a valid configuration


def test_source_spec_matches_the_imported_signature():
    from astroclip.training.align import align

    from_source, doc = _options.function_spec(align_cmd.FUNCTION)
    imported, doc2 = _options.function_spec(align)
    assert from_source == imported and doc == doc2


def test_building_the_parser_imports_no_lightning():
    code = ("import sys; from astroclip.cli import build_parser; build_parser(); "
            "print(any(m.startswith('lightning') for m in sys.modules))")
    import subprocess
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_parsed_values_are_the_function_keywords():
    p = _sub("align")
    args = p.parse_args(["--data", "d.h5", "--out", "run", "--max-steps", "7", "--betas", "0.8",
                         "0.9", "--no-augment", "--pooling", '{"num_heads": 2}', "--freeze",
                         "image=none,spectrum=backbone", "--accumulate", "2", "--devices", "0,1",
                         "--no-resume"])
    kw = _options.function_kwargs(args, align_cmd.FUNCTION, skip=align_cmd.SKIP)
    assert kw["data"] == "d.h5" and kw["max_steps"] == 7 and kw["betas"] == (0.8, 0.9)
    assert kw["augment"] is False and kw["pooling"] == {"num_heads": 2}
    assert kw["freeze"] == {"image": "none", "spectrum": "backbone"}
    assert kw["lr"] == 1e-4 and kw["epochs"] is None              # defaults of the signature
    run = _options.run_kwargs(args)
    assert run["accumulate"] == 2 and run["devices"] == [0, 1] and run["resume"] is False
    assert run["progress"] is None                                  # astroclip.conf decides
    RunOptions.from_options(**run)                                  # valid as they are


def test_types_from_docstring_and_choices():
    p = _sub("pretrain-spectra")
    args = p.parse_args(["--data", "d", "--out", "o", "--mask-run-length", "50",
                         "--mask-placement", "per_section"])
    assert args.mask_run_length == 50 and args.mask_placement == "per_section"
    with pytest.raises(SystemExit):
        p.parse_args(["--data", "d", "--out", "o", "--mask-placement", "middle"])
    with pytest.raises(SystemExit):
        p.parse_args(["--out", "o"])                                # --data is required


def test_parameter_without_a_type_is_refused():
    def f(*, x=None):
        """F.

        Parameters
        ----------
        x : optional
            Something.
        """
    with pytest.raises(TypeError, match="cannot make a command-line option of parameter 'x'"):
        _options.add_function_options(argparse.ArgumentParser(), f)


def test_doc_parameters_groups_and_sections():
    def f(a, *, b=1, c=2.0):
        """Do.

        Parameters
        ----------
        a : str
            First.
            Second line.
        b, c : optional
            Both.

        Returns
        -------
        int
        """
    doc = _options.doc_parameters(inspect.getdoc(f))
    assert doc == {"a": ("str", "First. Second line."), "b": ("optional", "Both."),
                   "c": ("optional", "Both.")}


def test_run_options_errors():
    with pytest.raises(TypeError, match="'num_workers' \\(renamed 'workers'\\)"):
        RunOptions.from_options(num_workers=2)
    with pytest.raises(TypeError, match="did you mean 'accumulate'"):
        RunOptions.from_options(acumulate=2)
    with pytest.raises(ValueError, match="accumulate must be >= 1"):
        RunOptions.from_options(accumulate=0)
    assert set(RENAMED.values()) <= {f.name for f in dataclasses.fields(RunOptions)}
    assert "accumulate : int, optional" in RunOptions.__doc__       # documented from the fields


def test_split_batch():
    assert split_batch(512, 2, 4) == 64
    with pytest.raises(ValueError, match="does not split into 3 device"):
        split_batch(512, 3, 1)
    with pytest.raises(ValueError, match="larger than the training set"):
        split_batch(64, 1, 1, n_train=10)
    with pytest.raises(ValueError, match="at least 2"):
        split_batch(2, 2, 1, minimum=2)
