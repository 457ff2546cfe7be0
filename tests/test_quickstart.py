"""The quickstart in a reduced size: every stage runs and the report is complete."""

import json

import pytest
from astropy.table import Table

from astroclip.cli import main
from astroclip.quickstart import SIZES, quickstart


def test_quickstart_tiny_writes_complete_report(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["quickstart", "--out", str(out), "--size", "tiny", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "[8/8]" in printed and "targets:" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stage_seconds"]) == {"simulate", "pretrain_spectra", "pretrain_images",
                                             "align", "embed", "search", "evaluate", "figures"}
    assert summary["config"]["n_galaxies"] == SIZES["tiny"]["n_galaxies"]
    table = Table.read(out / "r2_table.ecsv")
    assert ("MLP", "photometry") in set(zip(table["method"], table["modality"]))
    assert 0 <= summary["retrieval"]["image_to_spectrum_top5"] <= 1
    for name in ("model/config.json", "model/model.safetensors", "embeddings.h5",
                 "figures/retrieval_image_query.png", "figures/predicted_vs_true_z_knn.png",
                 "figures/embedding_map_spectrum.png"):
        assert (out / name).is_file(), name
    # the trained model is usable by the public API
    import astroclip
    model = astroclip.load_model(out / "model", device="cpu")
    assert hasattr(model, "encode_image") and hasattr(model, "encode_spectrum")


def test_quickstart_bad_options(tmp_path):
    with pytest.raises(ValueError, match="unknown size"):
        quickstart(tmp_path, size="huge")
    with pytest.raises(ValueError, match="unknown options"):
        quickstart(tmp_path, size="tiny", n_galaxy=3)
