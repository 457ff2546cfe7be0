"""
Embeddings, similarity search and properties with the public API
================================================================

The functions astronomers use day to day: ``load_model``, ``embed_spectrum``,
``embed_image``, a FAISS-backed ``SimilarityIndex`` for in-modal and
cross-modal search, k-NN property estimates and the retrieval figure of the
paper.  A small model is trained first with the quickstart's smallest size
(about a minute on a laptop CPU); point ``model=`` at your own trained model
or at ``"astroclip-released"`` to use the released weights.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import astroclip
from astroclip.data.paired import read_paired_dataset
from astroclip.inputs import grid
from astroclip.plotting.retrieval import plot_retrieval
from astroclip.quickstart import quickstart

work = Path(tempfile.mkdtemp())
quickstart(work, size="tiny", progress=False, verbose=False, n_galaxies=240)
model = astroclip.load_model(work / "model", device="cpu")

###############################################################################
# Embed the held-out galaxies of the mock survey.  Spectra and images go in
# with their units; embeddings come back as float32 arrays (or Table columns
# with ``as_table=True``).

table, arrays = read_paired_dataset(work / "mock_survey.h5", split="test")
spec = astroclip.embed_spectrum(arrays["flux"] * grid.FLUX_UNIT,
                                wavelength=grid.wavelength_grid(),
                                model=model, progress=False)
img = astroclip.embed_image(arrays["image"], bands="grz", unit="nanomaggy", model=model,
                            progress=False)
print(spec.shape, img.shape, spec.dtype)

###############################################################################
# One index holds both modalities: ask it for the spectra closest to an image.

index = astroclip.SimilarityIndex(spec, ids=table["targetid"], modality="spectrum",
                                  progress=False)
hits = astroclip.cross_modal_search(index, img[:3], query_modality="image", k=5,
                                    query_ids=table["targetid"][:3])
print(hits)

###############################################################################
# The paper's retrieval figure: a query and its neighbours in both modalities.

fig = plot_retrieval(0, images=arrays["image"], spectra=arrays["flux"],
                     image_embeddings=img, spectrum_embeddings=spec, k=4,
                     redshifts=np.asarray(table["Z"]))
plt.show()
