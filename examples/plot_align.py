"""
Aligning images and spectra with the contrastive (CLIP) loss
============================================================

The heart of AstroCLIP: an image encoder and a spectrum encoder trained so that
the image and the spectrum of the same galaxy land close together in one
embedding space (the symmetric InfoNCE loss of the paper's equation 1, with a
fixed logit scale of 15.5).  This example makes a small mock survey, trains
deliberately tiny encoders from scratch on the CPU for about a minute, and shows

* the training and validation losses, and the validation cross-modal retrieval
  accuracy (does an image find its own spectrum among all validation spectra?);
* a few cross-modal retrievals: query images and the spectra closest to them.

A real run starts from pretrained encoders (``astroclip pretrain-spectra``,
``astroclip pretrain-images`` or released weights) with the paper's freezing
policy, on GPUs::

    astroclip align --data train.h5 --preset paper --spectrum-model specformer/ \\
        --image-model moco/ --batch-size 512 --max-steps 15000 \\
        --devices 4 --strategy ddp

(see :doc:`/training` for multi-GPU and SLURM launches).
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from astroclip.evaluation import retrieval_accuracy
from astroclip.models.image import ImageEncoder
from astroclip.models.spectrum import SpectrumEncoder
from astroclip.plotting.training import plot_cross_modal_retrievals, plot_training_curves
from astroclip.simulate import SurveyConfig, generate_chunk
from astroclip.training.align import align

torch.manual_seed(0)

###############################################################################
# A small mock survey
# -------------------
# 1024 galaxies with DESI-like spectra (7781 pixels on the DESI grid) and g, r, z
# cutouts in nanomaggies (48 x 48 pixels here instead of 152, to stay fast).
# Any map-style Dataset whose items are ``{"image": ..., "spectrum": ...}`` dicts
# can be aligned, e.g. `astroclip.data.datasets.PairedDataset` on a training file.

arrays, truth = generate_chunk(SurveyConfig(seed=1, image_size=48), 0, 1024)


class Pairs(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.images = torch.from_numpy(arrays["image"][rows])
        self.spectra = torch.from_numpy(arrays["flux"][rows])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "spectrum": self.spectra[i]}


train, val = Pairs(slice(0, 896)), Pairs(slice(896, 1024))
print(len(train), "training pairs,", len(val), "validation pairs")

###############################################################################
# Train tiny encoders
# -------------------
# A ResNet with one bottleneck block per stage on the colour-mapped 40 x 40
# centre crop, and a one-block spectrum transformer (tokens of 40 pixels), both
# trained from scratch (``freeze="none"``: with pretrained encoders the paper
# freezes their bodies and trains only the embedding heads).  Validation runs
# after every epoch; the run folder gets an atomic, resumable ``last.ckpt``, CSV
# logs and, at the end, the aligned model in our safetensors + JSON format.

image_model = ImageEncoder(backbone="resnet", embed_dim=64, crop_size=40,
                           input_mapping="color_map",
                           backbone_kwargs=dict(layers=(1, 1, 1, 1), width=16, mlp_hidden=128))
spectrum_model = SpectrumEncoder(embed_dim=64, num_layers=1, num_heads=2, window=40, stride=40)

run = Path(tempfile.mkdtemp()) / "align"
model = align(train, val_data=val, out=run, image_model=image_model,
              spectrum_model=spectrum_model, freeze="none", batch_size=64, epochs=12,
              lr=1e-3, progress=False, seed=0)
print(sorted(p.name for p in run.iterdir()))

###############################################################################
# Loss and retrieval accuracy
# ---------------------------
# The chance level of top-k retrieval among the 128 validation galaxies is
# k / 128 (grey lines).

fig = plot_training_curves(run, smooth=5)

###############################################################################
# Cross-modal retrievals
# ----------------------
# Embed the validation galaxies with both encoders, then, for a few query
# images, rank all validation spectra by cosine similarity (paper equation 2).

with torch.no_grad():
    z_img = model.encode_image(val.images)
    z_spec = model.encode_spectrum(val.spectra)
acc = retrieval_accuracy(z_img, z_spec, k=(1, 5))
print(acc)

fig = plot_cross_modal_retrievals(val.images.numpy(), val.spectra.numpy(), z_img.numpy(),
                                  z_spec.numpy(), queries=[3, 40, 100], k=3)
plt.show()
