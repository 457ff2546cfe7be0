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


def test_quickstart_gpu_presets_wire_through(tmp_path):
    """The presets of ``--size gpu`` (paper architectures) train, align and embed end to
    end; run here at a size a CPU manages in seconds."""
    from astroclip.models.presets import SPECTRUM_PRESETS

    assert SIZES["gpu"]["spectrum_preset"] == "paper"
    # the paper's image preset with a lighter spectrum transformer keeps this test fast;
    # the paper spectrum preset differs from "small" only in its sizes
    assert {k: v for k, v in SPECTRUM_PRESETS["paper"].items() if k not in (
        "embed_dim", "num_layers", "num_heads")} == {k: v for k, v in SPECTRUM_PRESETS[
            "small"].items() if k not in ("embed_dim", "num_layers", "num_heads")}
    summary = quickstart(tmp_path, size="tiny", progress=False, verbose=False, n_galaxies=96,
                         spectrum_steps=2, image_steps=2, align_steps=2,
                         spectrum_preset="small", image_preset=SIZES["gpu"]["image_preset"])
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    text = json.dumps(config)
    assert '"input_mapping": "flux"' in text          # the paper ResNet sees raw fluxes
    assert '"window": 20' in text and '"stride": 10' in text
    assert summary["config"]["image_preset"] == "paper"


def test_quickstart_unknown_preset(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        quickstart(tmp_path, size="tiny", spectrum_preset="huge")
    assert not (tmp_path / "mock_survey.h5").exists()
