"""The aligned AstroCLIP model: image encoder + spectrum encoder in one embedding space.

`AstroCLIP` holds an `~astroclip.models.image.ImageEncoder` (``image_encoder``)
and a `~astroclip.models.spectrum.SpectrumEmbedder` (``spectrum_encoder``),
each ending with its embedding head, and maps raw inputs to ``(B, d)``
embeddings with `AstroCLIP.encode_image` (g, r, z cutouts in nanomaggies) and
`AstroCLIP.encode_spectrum` (flux on the DESI grid).

`clip_loss` is the paper's equation 1 made symmetric
(the AstroCLIP paper, section 3.1): embeddings are L2-normalised
(eps 1e-3), ``logits = s * z_img @ z_spec.T`` with a fixed logit scale ``s``
(15.5 as released, tau ~ 0.065), and the cross-entropy of matching each image
to its spectrum and each spectrum to its image is averaged.  With
``gather=True`` the negatives come from every process of a distributed run
(`torch.distributed.nn.functional.all_gather`, which keeps the gradients).

Freezing policies (`FREEZE_POLICIES`): ``"paper"`` (default) freezes the
spectrum transformer and the image backbone (convolutional part of the ResNet /
the ViT) and trains the embedding heads; ``"none"`` trains everything;
a dict ``{"image": level, "spectrum": level}`` with levels ``"backbone"``,
``"none"`` or ``"all"`` gives any other combination.  Frozen modules stay in
evaluation mode (BatchNorm statistics and dropout do not move) and run without
gradients.

Cross-modal retrieval is scored by `astroclip.evaluation.retrieval_accuracy`.
"""

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .image import ImageEncoder
from .presets import get_preset
from .spectrum import SpectrumEmbedder

__all__ = ["AstroCLIP", "clip_loss", "clip_logits", "FREEZE_POLICIES",
           "LOGIT_SCALE", "NORM_EPS"]

#: Logit scale of the released model (temperature ~ 1 / 15.5).
LOGIT_SCALE = 15.5
#: Epsilon of the L2 normalisation of the embeddings.
NORM_EPS = 1e-3
#: Named freezing policies: per-modality level ("backbone": only the head trains;
#: "none": everything trains; "all": nothing trains).
FREEZE_POLICIES = {
    "paper": {"image": "backbone", "spectrum": "backbone"},
    "none": {"image": "none", "spectrum": "none"},
    "heads": {"image": "backbone", "spectrum": "backbone"},
}
_LEVELS = ("backbone", "none", "all")


# ====================================================================== the loss


def _check_pair(image_embeddings, spectrum_embeddings):
    if image_embeddings.ndim != 2 or spectrum_embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (B, d) matrices, got {tuple(image_embeddings.shape)} "
                         f"and {tuple(spectrum_embeddings.shape)}")
    if image_embeddings.shape[0] != spectrum_embeddings.shape[0]:
        raise ValueError(f"the image batch has {image_embeddings.shape[0]} items but the spectrum "
                         f"batch has {spectrum_embeddings.shape[0]}; item i of each must be the "
                         "same object (pairs), so both batches must have the same length")
    if image_embeddings.shape[1] != spectrum_embeddings.shape[1]:
        raise ValueError(f"image embeddings have {image_embeddings.shape[1]} dimensions but "
                         f"spectrum embeddings {spectrum_embeddings.shape[1]}; both heads must "
                         "have the same embed_dim")


def _gather(x):
    """All processes' rows, concatenated; gradients flow back to each process's own rows."""
    from torch.distributed.nn.functional import all_gather
    return torch.cat(all_gather(x.contiguous()), dim=0)


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def clip_logits(image_embeddings, spectrum_embeddings, *, logit_scale=LOGIT_SCALE, eps=NORM_EPS):
    """``s * normalize(z_img) @ normalize(z_spec).T`` (image rows, spectrum columns)."""
    _check_pair(image_embeddings, spectrum_embeddings)
    zi = F.normalize(image_embeddings.float(), dim=-1, eps=eps)
    zs = F.normalize(spectrum_embeddings.float(), dim=-1, eps=eps)
    return logit_scale * zi @ zs.T


def clip_loss(image_embeddings, spectrum_embeddings, *, logit_scale=LOGIT_SCALE, eps=NORM_EPS,
              gather=False):
    """Symmetric InfoNCE loss of paired embeddings (paper equation 1).

    Parameters
    ----------
    image_embeddings, spectrum_embeddings : `torch.Tensor`
        ``(B, d)``; row i of both is the same object.
    logit_scale : float, optional
        Fixed inverse temperature ``s`` (15.5 as released).
    eps : float, optional
        Epsilon of the L2 normalisation.
    gather : bool, optional
        In a distributed run, use every process's embeddings as negatives (each
        process must have the same ``B``); gradients flow through the gather.

    Returns
    -------
    `torch.Tensor`
        Scalar float32 loss: mean of the image->spectrum and spectrum->image
        cross-entropies.

    Raises
    ------
    ValueError
        Batches of different lengths or widths, or fewer than 2 pairs in total
        (a contrastive loss needs negatives).

    Examples
    --------
    >>> import torch
    >>> from astroclip.models.clip import clip_loss
    >>> z = torch.eye(4)
    >>> float(clip_loss(z, z)) < float(clip_loss(z, z.roll(1, 0)))
    True
    """
    _check_pair(image_embeddings, spectrum_embeddings)
    world, rank = _dist() if gather else (1, 0)
    b = image_embeddings.shape[0]
    if b * world < 2:
        raise ValueError(f"a contrastive batch needs at least 2 pairs (got {b * world}): each "
                         "pair's negatives are the other pairs of the batch; use a larger batch "
                         "or dataset")
    zi = F.normalize(image_embeddings.float(), dim=-1, eps=eps)
    zs = F.normalize(spectrum_embeddings.float(), dim=-1, eps=eps)
    if world > 1:
        all_i, all_s = _gather(zi), _gather(zs)
    else:
        all_i, all_s = zi, zs
    labels = torch.arange(b, device=zi.device) + rank * b
    loss_i = F.cross_entropy(logit_scale * zi @ all_s.T, labels)
    loss_s = F.cross_entropy(logit_scale * zs @ all_i.T, labels)
    return 0.5 * (loss_i + loss_s)


# ===================================================================== the model


def _resolve_image(image):
    if isinstance(image, str):
        return get_preset("image", image)
    return dict(image)


def _resolve_spectrum(spectrum, embed_dim):
    spectrum = dict(spectrum)
    backbone = spectrum.get("backbone", "small")
    if isinstance(backbone, str):
        backbone = get_preset("spectrum", backbone)
    pooling = dict(spectrum.get("pooling", {}))
    pooling.setdefault("embed_dim", embed_dim)
    pooling.setdefault("residual", True)  # the released spectrum side: x + mlp(x)
    return dict(backbone=dict(backbone), pooling=pooling)


def _resolve_freeze(freeze):
    if isinstance(freeze, str):
        if freeze not in FREEZE_POLICIES:
            raise ValueError(f"unknown freezing policy {freeze!r}; choose one of "
                             f"{sorted(FREEZE_POLICIES)} or a dict like "
                             "{'image': 'backbone', 'spectrum': 'none'}")
        return dict(FREEZE_POLICIES[freeze])
    freeze = dict(freeze)
    if set(freeze) - {"image", "spectrum"}:
        raise ValueError(f"freeze dict keys must be 'image' and 'spectrum', got {sorted(freeze)}")
    out = {"image": freeze.get("image", "backbone"), "spectrum": freeze.get("spectrum", "backbone")}
    for side, level in out.items():
        if level not in _LEVELS:
            raise ValueError(f"freeze level {level!r} for {side} must be one of {_LEVELS}")
    return out


class AstroCLIP(nn.Module):
    """Image and spectrum encoders aligned into one embedding space.

    Parameters
    ----------
    image : str or dict
        An image preset name (`astroclip.models.presets.IMAGE_PRESETS`) or
        `~astroclip.models.image.ImageEncoder` keyword arguments.
    spectrum : dict
        ``{"backbone": <spectrum preset name or SpectrumEncoder kwargs>,
        "pooling": <CrossAttentionHead kwargs>}``; the pooling ``embed_dim``
        defaults to the image encoder's and ``residual`` to True (released).
    logit_scale : float, optional
        Fixed inverse temperature of the loss (15.5 as released).
    norm_eps : float, optional
        Epsilon of the L2 normalisation in the loss.
    freeze : str or dict, optional
        Freezing policy (`FREEZE_POLICIES`; ``"paper"`` by default).

    Examples
    --------
    >>> import torch
    >>> from astroclip.models.clip import AstroCLIP
    >>> model = AstroCLIP(
    ...     image=dict(backbone="resnet", embed_dim=16, crop_size=32,
    ...                backbone_kwargs=dict(layers=(1, 1, 1, 1), width=4, mlp_hidden=32)),
    ...     spectrum=dict(backbone=dict(embed_dim=16, num_layers=1, num_heads=2, window=40,
    ...                                 stride=40), pooling=dict(num_heads=2)))
    >>> zi = model.encode_image(torch.rand(3, 3, 40, 40))
    >>> zs = model.encode_spectrum(torch.rand(3, 7781))
    >>> zi.shape, zs.shape
    (torch.Size([3, 16]), torch.Size([3, 16]))
    >>> loss = model.loss(zi, zs)
    """

    #: Model family written in ``config.json`` (`astroclip.models.weights.save_model`).
    family = "clip"

    def __init__(self, *, image="resnet-small", spectrum=None, logit_scale=LOGIT_SCALE,
                 norm_eps=NORM_EPS, freeze="paper"):
        super().__init__()
        image = _resolve_image(image)
        self.image_encoder = ImageEncoder(**image)
        spectrum = _resolve_spectrum(spectrum or {}, self.image_encoder.embed_dim)
        self.spectrum_encoder = SpectrumEmbedder(**spectrum)
        if self.spectrum_encoder.pooling.embed_dim != self.image_encoder.embed_dim:
            raise ValueError(f"the spectrum head embeds into "
                             f"{self.spectrum_encoder.pooling.embed_dim} dimensions but the image "
                             f"head into {self.image_encoder.embed_dim}; give both the same "
                             "embed_dim")
        self.logit_scale = float(logit_scale)
        self.norm_eps = float(norm_eps)
        self.embed_dim = self.image_encoder.embed_dim
        self.freeze = _resolve_freeze(freeze)
        self.config = dict(image=dict(self.image_encoder.config),
                           spectrum=dict(self.spectrum_encoder.config),
                           logit_scale=self.logit_scale, norm_eps=self.norm_eps,
                           freeze=dict(self.freeze))
        self.apply_freeze(self.freeze)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def from_parts(cls, image_encoder, spectrum_encoder, *, logit_scale=LOGIT_SCALE,
                   norm_eps=NORM_EPS, freeze="paper"):
        """Build from existing (e.g. pretrained) encoders, keeping their weights.

        Parameters
        ----------
        image_encoder : `~astroclip.models.image.ImageEncoder`
        spectrum_encoder : `~astroclip.models.spectrum.SpectrumEmbedder`
        """
        if not isinstance(image_encoder, ImageEncoder):
            raise TypeError("image_encoder must be an ImageEncoder, got "
                            f"{type(image_encoder).__name__}")
        if not isinstance(spectrum_encoder, SpectrumEmbedder):
            raise TypeError("spectrum_encoder must be a SpectrumEmbedder, got "
                            f"{type(spectrum_encoder).__name__}")
        with torch.device("meta"):
            model = cls(image=image_encoder.config, spectrum=spectrum_encoder.config,
                        logit_scale=logit_scale, norm_eps=norm_eps, freeze=freeze)
        model.image_encoder = image_encoder
        model.spectrum_encoder = spectrum_encoder
        model.apply_freeze(model.freeze)
        return model

    # ------------------------------------------------------------ freezing
    def _side_modules(self, side):
        enc = self.image_encoder if side == "image" else self.spectrum_encoder
        if side == "image":
            return enc, enc.backbone_parameters(), enc.backbone_modules()
        return enc, list(enc.backbone.parameters()), [enc.backbone]

    def _unused_parameters(self):
        """Parameters no embedding path uses (kept frozen so DDP sees no unused ones)."""
        out = []
        bb = self.image_encoder.backbone
        names = ("cls_token", "pos_embed", "mask_token", "register_tokens")
        if getattr(self.image_encoder, "embedding", "head") == "class_token":
            names = ("mask_token",)  # the class-token path uses the others
        for name in names:
            p = getattr(bb, name, None)
            if isinstance(p, nn.Parameter):
                out.append(p)
        out += list(self.spectrum_encoder.backbone.head.parameters())
        return out

    def apply_freeze(self, freeze):
        """Set ``requires_grad`` by a freezing policy (see `FREEZE_POLICIES`)."""
        self.freeze = _resolve_freeze(freeze)
        self.config["freeze"] = dict(self.freeze)
        self._frozen_modules = []
        for side in ("image", "spectrum"):
            enc, backbone_params, backbone_modules = self._side_modules(side)
            level = self.freeze[side]
            for p in enc.parameters():
                p.requires_grad_(level != "all")
            if level in ("backbone", "all"):
                for p in backbone_params:
                    p.requires_grad_(False)
                self._frozen_modules += backbone_modules
            if level == "all":
                self._frozen_modules.append(enc)
        for p in self._unused_parameters():
            p.requires_grad_(False)
        self.train(self.training)
        return self

    def train(self, mode=True):
        super().train(mode)
        for m in getattr(self, "_frozen_modules", []):
            m.eval()
        return self

    def trainable_parameters(self):
        """The parameters the optimizer updates."""
        return [p for p in self.parameters() if p.requires_grad]

    def _backbone_grad(self, side):
        return torch.is_grad_enabled() and self.freeze[side] == "none"

    # ------------------------------------------------------------ encoding
    def encode_image(self, images):
        """Raw cutouts ``(B, 3, H, W)`` (g, r, z nanomaggies) -> embeddings ``(B, d)``."""
        enc = self.image_encoder
        x = enc.preprocess(images)
        with contextlib.nullcontext() if self._backbone_grad("image") else torch.no_grad():
            feats = enc.features(x)
        return enc.head(feats)

    def encode_spectrum(self, spectra):
        """Flux ``(B, 7781)`` on the DESI grid -> embeddings ``(B, d)``."""
        enc = self.spectrum_encoder
        if not torch.is_tensor(spectra):
            spectra = torch.as_tensor(spectra)
        with contextlib.nullcontext() if self._backbone_grad("spectrum") else torch.no_grad():
            tokens = enc.backbone(spectra)
        return enc.pooling(tokens)

    def forward(self, images, spectra):
        """Both embeddings ``(z_img, z_spec)`` of a batch of pairs."""
        if len(images) != len(spectra):
            raise ValueError(f"got {len(images)} images but {len(spectra)} spectra; pass one "
                             "image and one spectrum per object, in the same order")
        return self.encode_image(images), self.encode_spectrum(spectra)

    def loss(self, image_embeddings, spectrum_embeddings, *, gather=False):
        """`clip_loss` with this model's logit scale and normalisation epsilon."""
        return clip_loss(image_embeddings, spectrum_embeddings, logit_scale=self.logit_scale,
                         eps=self.norm_eps, gather=gather)

    def num_parameters(self, *, trainable=False):
        """Number of (trainable) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable)
