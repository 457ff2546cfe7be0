"""The embed -> search -> evaluate command chain on a small labelled catalogue."""

import numpy as np
import pytest
from astropy.table import Table

from astroclip.cli import main
from astroclip.inputs import grid
from astroclip.models.weights import save_model

from ..test_api import fake_images, tiny_model


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    from astroclip.data.paired import PairedDatasetWriter

    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("cat")
    save_model(tiny_model(), root / "model")
    n = 120
    z = rng.uniform(0.02, 0.5, n)
    mass = 9.5 + 1.5 * rng.random(n)
    wave = grid.WAVELENGTH
    flux = 2 + rng.normal(0, 0.2, (n, grid.N_PIXELS))
    flux += 40 * np.exp(-0.5 * ((wave[None] - 6563 * (1 + z[:, None])) / 4) ** 2)
    flux = flux.astype(np.float32)
    fluxes = {b: 10 ** (0.4 * (22.5 - (18 + 2 * z + 0.3 * rng.normal(size=n) + o)))
              for b, o in zip("GRZ", (0.6, 0, -0.4))}
    with PairedDatasetWriter(root / "survey.h5",
                             label_names=("Z", "LOG_MSTAR", "FLUX_G", "FLUX_R", "FLUX_Z")) as w:
        w.append(targetid=np.arange(n) + 10, ra=np.zeros(n), dec=np.zeros(n), flux=flux,
                 ivar=np.ones_like(flux), image=fake_images(n, rng),
                 split=np.where(np.arange(n) < 90, 0, 2).astype(np.int8),
                 labels={"Z": z, "LOG_MSTAR": mass, **{f"FLUX_{b}": v for b, v in fluxes.items()}})
    return root


def test_embed_search_evaluate_commands(catalogue, capsys):
    root = catalogue
    emb = root / "emb.h5"
    assert main(["embed", str(root / "survey.h5"), "--out", str(emb), "--model",
                 str(root / "model"), "--chunk-size", "50", "--no-progress"]) == 0
    assert emb.exists()
    # an existing output is refused with a clear message and exit code 1
    assert main(["embed", str(root / "survey.h5"), "--out", str(emb), "--model",
                 str(root / "model"), "--no-progress"]) == 1
    assert "already exists" in capsys.readouterr().err

    out = root / "neighbours.ecsv"
    assert main(["search", "--embeddings", str(emb), "--modality", "spectrum",
                 "--query-ids", "10", "11", "--query-modality", "image", "--k", "5",
                 "--out", str(out), "--no-progress"]) == 0
    t = Table.read(out)
    assert len(t) == 10
    assert main(["search", "--embeddings", str(emb), "--query-ids", "99999"]) == 1
    assert "not found" in capsys.readouterr().err

    r2 = root / "r2.ecsv"
    assert main(["evaluate", "--embeddings", str(emb), "--labels", str(root / "survey.h5"),
                 "--k", "8", "--out", str(r2), "--no-progress"]) == 0
    table = Table.read(r2)
    assert {"method", "modality", "Z", "LOG_MSTAR"} <= set(table.colnames)
    rows = {(m, mod): row for m, mod, row in zip(table["method"], table["modality"], table)}
    assert ("MLP", "photometry") in rows and ("k-NN", "spectrum") in rows
    # the photometry was made from the redshift: a correct join of labels and
    # photometry by targetid gives a clearly informative baseline
    assert rows[("MLP", "photometry")]["Z"] > 0.4
    assert np.all(np.isfinite([rows[key]["Z"] for key in rows]))


def test_evaluate_bad_property(catalogue):
    from astroclip.evaluation import evaluate_embeddings
    ids = np.arange(10, 130)
    with pytest.raises(ValueError, match="no label column"):
        evaluate_embeddings((ids, {"image": np.zeros((120, 4))}), catalogue / "survey.h5",
                            properties=("SFR",))
    with pytest.raises(ValueError, match="not in"):
        evaluate_embeddings((np.arange(5000, 5120), {"image": np.zeros((120, 4))}),
                            catalogue / "survey.h5")
