"""
The released models: convert, embed a DESI coadd, search
========================================================

The released AstroCLIP weights (Parker et al. 2024) are PyTorch Lightning
checkpoints published on the Hugging Face hub.  On a machine with network
access, one call downloads, verifies and converts them, once::

    import astroclip
    emb = astroclip.embed_spectrum("coadd-sv3-dark-26065.fits", model="astroclip-released")

``model="specformer-released"`` and ``model="astrodino-released"`` give the
pretrained spectrum and image models alone (see :doc:`/released`).  A file you
downloaded yourself converts with ``astroclip convert-weights`` or
`~astroclip.models.factory.convert_released_checkpoint`.

This page has no network access, so it writes a *small* checkpoint in the
layout of the released ``astroclip.ckpt`` (same tensor names, random weights,
reduced sizes), converts it the way the real file is converted, embeds the
real DESI spectra that ship with specutils and searches them.  With random
weights the neighbours mean nothing; the steps are those of the real model.
"""

import importlib.util
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import astroclip
from astroclip.inputs.desi import read_desi_coadd
from astroclip.models.clip import AstroCLIP
from astroclip.models.convert import read_checkpoint
from astroclip.models.factory import convert_released_checkpoint

work = Path(tempfile.mkdtemp())

# %%
# A checkpoint in the released layout
# -----------------------------------
# The released ``astroclip.ckpt`` holds a ViT-L image encoder and the 768-wide
# SpecFormer with two cross-attention heads (1024-d embeddings).  The same
# architecture at toy sizes, renamed to the released tensor names, saved as a
# Lightning checkpoint: ``state_dict`` plus ``hyper_parameters``.  (The real
# file also pickles the reference code's encoder modules in its
# hyper-parameters; astroclip reads it without importing or running them.)

torch.manual_seed(0)
toy = AstroCLIP(
    image=dict(backbone="vit", embed_dim=32, crop_size=48, input_mapping="color_map",
               backbone_kwargs=dict(img_size=48, embed_dim=32, depth=2, num_heads=2,
                                    block_chunks=2)),
    spectrum=dict(backbone=dict(embed_dim=32, num_layers=1, num_heads=2),
                  pooling=dict(num_heads=4)))
released_names = {
    "image_encoder.cross_attention.mlp.": "image_encoder.mlp.",
    "spectrum_encoder.pooling.mlp.": "spectrum_encoder.mlp.",
    "spectrum_encoder.pooling.": "spectrum_encoder.cross_attention.",
}
state = {}
for name, tensor in toy.state_dict().items():
    for ours, theirs in released_names.items():
        name = name.replace(ours, theirs)
    state[name] = tensor
checkpoint = work / "astroclip.ckpt"
torch.save({"state_dict": state, "epoch": 0, "global_step": 0,
            "hyper_parameters": {"temperature": 15.5, "logit_scale": 15.5, "lr": 1e-4}},
           checkpoint)
print(sorted(state)[:4])

# %%
# Convert it
# ----------
# `~astroclip.models.convert.read_checkpoint` tells what the file holds;
# `~astroclip.models.factory.convert_released_checkpoint` maps every tensor
# onto astroclip's modules (refusing missing, unexpected or mis-shaped ones)
# and writes ``model.safetensors`` + ``config.json``.  The real file needs no
# option: the head counts follow from its widths (16 for the ViT-L, 6 for the
# SpecFormer).  On the command line::
#
#     astroclip convert-weights astroclip.ckpt --part astroclip --out astroclip-released
#
# and `astroclip.models.factory.fetch_released` ``("astroclip-released",
# checkpoint="astroclip.ckpt")`` does the same into the model directory, after
# which ``model="astroclip-released"`` works offline.

info = read_checkpoint(checkpoint)
print(info.layout, info.hyper_parameters)
folder = convert_released_checkpoint(checkpoint, out=work / "astroclip-released",
                                     part="astroclip", num_heads=2)
model = astroclip.load_model(folder, device="cpu")
print(type(model).__name__, model.embed_dim, "-d embeddings")

# %%
# Embed real DESI spectra
# -----------------------
# The two small DESI Early Data Release coadd files that ship with specutils
# hold ten fibres; some are sky or unassigned fibres without data, flagged
# ``VALID = False`` by the reader and left out here.

data = Path(importlib.util.find_spec("specutils").submodule_search_locations[0])
files = sorted((data / "io" / "default_loaders" / "tests" / "desi_test_data").glob("coadd-*"))
spectra = read_desi_coadd(files)
good = np.flatnonzero(spectra.meta["VALID"])
emb = astroclip.embed_spectrum(spectra, model=model, progress=False, device="cpu")
print(emb.shape, "embeddings;", len(good), "valid spectra:",
      np.asarray(spectra.meta["TARGETID"][good]).tolist())

# %%
# Search
# ------
# A `~astroclip.SimilarityIndex` over the valid spectra (cosine similarity,
# the paper's equation 2); each spectrum's nearest neighbour is itself, the
# next one is its closest match.  Image embeddings of the same model
# (`~astroclip.embed_image`) go into the same index for cross-modal queries.

ids = np.asarray(spectra.meta["TARGETID"][good])
index = astroclip.SimilarityIndex(emb[good], ids=ids, modality="spectrum", progress=False)
hits = index.search(emb[good[:1]], k=3, query_ids=ids[:1])
print(hits)

neighbour = int(hits["neighbour_index"][hits["rank"] == 2][0])
wave = spectra.wavelength.value
fig, ax = plt.subplots(figsize=(9, 3.5), layout="constrained")
for row, label in ((good[0], "query"), (good[neighbour], "closest match (random weights)")):
    smooth = np.convolve(spectra.flux[row], np.ones(25) / 25, mode="same")
    ax.plot(wave, smooth, lw=0.8, label=f"{label}: TARGETID {spectra.meta['TARGETID'][row]}")
ax.set_xlabel("wavelength [Angstrom]")
ax.set_ylabel(r"flux [$10^{-17}$ erg s$^{-1}$ cm$^{-2}$ $\AA^{-1}$]")
ax.legend(loc="upper right", fontsize="small")
plt.show()
