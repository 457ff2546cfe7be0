"""
Named models and whole catalogues: ``list_models`` and ``embed_catalog``
========================================================================

Two things you need once you go past a handful of galaxies:

* a **model registry**: trained models are folders (``model.safetensors`` +
  ``config.json``); give one a name and every function takes ``model="name"``.
  The released AstroCLIP weights are registered too: online they are fetched
  once, checked by sha256 and converted; offline you get an error that says
  which file to download and where to put it.
* **catalogue embedding** that survives interruptions: ``embed_catalog``
  writes the embeddings of an arbitrarily large catalogue chunk by chunk,
  each chunk atomically, and a re-run resumes at the first missing chunk.

A small model is trained first with the quickstart's smallest size (about a
minute on a laptop CPU).
"""

import os
import tempfile
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np
from astropy.table import Table

import astroclip
from astroclip.data.paired import read_paired_dataset
from astroclip.plotting.properties import plot_embedding_map
from astroclip.quickstart import quickstart

work = Path(tempfile.mkdtemp())
# Registered models live in $ASTROCLIP_MODEL_DIR (default: the astropy cache);
# this example keeps its own folder.
previous_model_dir = os.environ.get("ASTROCLIP_MODEL_DIR")
os.environ["ASTROCLIP_MODEL_DIR"] = str(work / "models")
quickstart(work, size="tiny", progress=False, verbose=False, n_galaxies=240)

###############################################################################
# Register the trained model under a name and list what is available: local
# models and the released weights (not downloaded here, so not available).
# ``list_models()`` without ``kind=`` also lists the architecture presets,
# model classes and checkpoint parts that ``create_model`` builds.

astroclip.register_model(work / "model", "mock-tiny")
models = astroclip.list_models(kind=["local", "released"])
print(models["name", "kind", "available"])

###############################################################################
# Released weights need a download.  Without network access (or with
# ``download=False``) the error tells you what to fetch and where to put it.

try:
    astroclip.load_model("astroclip-released", download=False)
except Exception as err:  # noqa: BLE001 - printing the message is the point
    print(f"{type(err).__name__}: {err}")

###############################################################################
# Embed the whole mock catalogue into an HDF5 file in chunks of 64 rows.  The
# chunks go to ``embeddings.h5.parts/`` first; had the run been interrupted,
# calling ``embed_catalog`` again would pick up at the first missing chunk.

out = astroclip.embed_catalog(work / "mock_survey.h5", out=work / "catalog.h5",
                              model="mock-tiny", chunk_size=64, progress=False)
with h5py.File(out, "r") as f:
    print({k: f[k].shape for k in f})
    print(dict(f.attrs))
    ids, spec = f["targetid"][:], f["spectrum_embedding"][:]

###############################################################################
# The same embeddings as a FITS table (any astropy format works the same way);
# the model name, version and weights hash travel in the table's metadata.

fits_out = astroclip.embed_catalog(work / "mock_survey.h5", out=work / "catalog.fits",
                                   model="mock-tiny", chunk_size=64, modality="spectrum",
                                   progress=False)
t = Table.read(fits_out)
print(t[:3])
print(dict(t.meta))
assert np.allclose(np.asarray(t["spectrum_embedding"]), spec, atol=1e-5)

###############################################################################
# A 2-D map of the spectrum embeddings, coloured by the mock redshift.

labels, _ = read_paired_dataset(work / "mock_survey.h5", fields=())
z = dict(zip(np.asarray(labels["targetid"]).tolist(), np.asarray(labels["Z"])))
fig = plot_embedding_map(spec, np.array([z[int(i)] for i in ids]), label="redshift")
plt.show()

# Put the model directory back as it was.
if previous_model_dir is None:
    del os.environ["ASTROCLIP_MODEL_DIR"]
else:
    os.environ["ASTROCLIP_MODEL_DIR"] = previous_model_dir
