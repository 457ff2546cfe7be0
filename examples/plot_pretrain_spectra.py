"""
Pretraining the spectrum transformer by filling masked segments
================================================================

AstroCLIP's spectrum encoder is a transformer first trained on spectra alone:
contiguous runs of tokens are zeroed and the model learns to predict them
(mean squared error on the hidden entries only).  This example makes a small
mock survey, pretrains a deliberately tiny model for a few dozen steps on the
CPU, and shows

* the training and validation losses,
* the paper's mask-filling view (appendix C): hidden regions shaded, the
  smoothed truth against the prediction, zoom insets on lines,
* attention maps, one per head, drawn against wavelength (appendix B).

A real run uses the ``paper`` preset (43.2 M parameters) on the full training
set, on GPUs, for tens of thousands of steps::

    astroclip pretrain-spectra --data train.h5 --preset paper --out run/ \\
        --max-steps 30000 --batch-size 64 --devices 4 --strategy ddp
"""

import csv
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from astroclip.simulate import SurveyConfig, generate_chunk
from astroclip.training.spectra import pretrain_spectra
from astroclip.plotting.spectra import plot_mask_filling, plot_spectrum_attention

torch.manual_seed(0)

###############################################################################
# A small mock survey
# -------------------
# Spectra on the DESI grid (7781 pixels, 1e-17 erg/s/cm2/A) with emission
# lines, noise and masked pixels; the truth catalogue gives the redshifts.

arrays, truth = generate_chunk(SurveyConfig(seed=3, image_size=16), 0, 128)
flux = arrays["flux"]
train, val = flux[:112], flux[112:]
print(flux.shape, "redshifts", np.round(truth["Z"][:5], 3))

###############################################################################
# Pretrain briefly
# ----------------
# A tiny configuration (64 wide, 2 blocks, 2 heads) so that the example runs in about a
# minute on a laptop CPU; the paper's masking (6 runs of 30 tokens).  The run
# folder gets an atomic, resumable ``last.ckpt`` and, at the end, the weights
# in our safetensors + JSON format.

run = Path(tempfile.mkdtemp()) / "pretrain"
model = pretrain_spectra(train, val_data=val, out=run, preset="small",
                         model_config=dict(embed_dim=64, num_layers=2, num_heads=2),
                         max_steps=60, batch_size=12, lr=2e-3, val_every=20,
                         checkpoint_every=30, progress=False, seed=0)
print(sorted(p.name for p in run.iterdir()))

###############################################################################
# Losses
# ------

rows = list(csv.DictReader(open(run / "logs" / "metrics.csv")))
fig, ax = plt.subplots(figsize=(6, 3.5))
steps = [int(r["step"]) for r in rows if r["train_loss"]]
ax.plot(steps, [float(r["train_loss"]) for r in rows if r["train_loss"]], label="train")
ax.plot([int(r["step"]) for r in rows if r["val_loss"]],
        [float(r["val_loss"]) for r in rows if r["val_loss"]], "o-", label="validation")
ax.set_xlabel("step")
ax.set_ylabel("masked MSE (standardised flux)")
ax.legend()
fig.tight_layout()

###############################################################################
# Mask filling
# ------------
# The shaded regions were zeroed before the model saw the spectrum.  With this
# little training the model mostly recovers the continuum level and shape;
# the paper's model, trained far longer, also reproduces the lines.

i = 112 + int(np.argmax(truth["Z"][112:] < 0.3))
fig = plot_mask_filling(model, flux[i], seed=2, redshift=float(truth["Z"][i]),
                        title=f"validation galaxy, z = {truth['Z'][i]:.3f}")

###############################################################################
# Attention maps
# --------------
# One map per head over the 777 spectrum tokens.  For the pretrained encoder
# alone we show the last block's attention of the statistics token; after
# alignment, `plot_spectrum_attention` on the spectrum embedder shows the
# cross-attention pooling head, the maps of the paper's appendix B.

fig = plot_spectrum_attention(model, flux[i])
plt.show()
