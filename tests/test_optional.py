import logging
import sys

import pytest

from astroclip._optional import OPTIONAL, install_hint, require
from astroclip.exceptions import AstroclipError, OptionalDependencyError


def test_require_returns_the_module():
    mod = require("faiss", purpose="search")
    assert hasattr(mod, "IndexFlatIP")


@pytest.mark.parametrize("module, extra", [("faiss", "search"), ("lightning.pytorch", "train"),
                                           ("matplotlib.pyplot", "plot"),
                                           ("speclite.filters", "simulate")])
def test_missing_optional_names_the_extra(monkeypatch, module, extra):
    top = module.split(".")[0]
    for name in list(sys.modules):
        if name == top or name.startswith(top + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, top, None)  # makes the import fail
    with pytest.raises(OptionalDependencyError) as info:
        require(module, purpose="the feature under test")
    err = info.value
    assert isinstance(err, ImportError) and isinstance(err, AstroclipError)
    assert f'pip install "astroclip[{extra}]"' in str(err)
    assert "the feature under test" in str(err) and OPTIONAL[top][0] in str(err)


def test_install_hint_without_extra():
    assert install_hint("pyarrow") == "pip install pyarrow"


def test_unknown_module_is_a_programming_error():
    with pytest.raises(KeyError):
        require("numpy", purpose="x")


def test_public_name_of_a_missing_extra(monkeypatch):
    import astroclip

    monkeypatch.delitem(astroclip.__dict__, "SimilarityIndex", raising=False)
    for name in list(sys.modules):
        if name == "faiss" or name.startswith("faiss.") or name == "astroclip.search":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(OptionalDependencyError, match=r'astroclip\[search\]'):
        astroclip.SimilarityIndex


def test_lightning_quiet_holds_back_banners(caplog, tmp_path):
    from astroclip import conf
    from astroclip.training.trainer import build_trainer

    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    build_trainer(out_dir=tmp_path / "a", max_steps=1, accelerator="cpu", devices=1,
                  progress=False)
    assert not [r for r in caplog.records if "GPU available" in r.getMessage()]
    with conf.set_temp("lightning_messages", True):
        build_trainer(out_dir=tmp_path / "b", max_steps=1, accelerator="cpu", devices=1,
                      progress=False)
    assert [r for r in caplog.records if "GPU available" in r.getMessage()]
