"""Image encoders: a ResNet-50 and a DINOv2-style ViT, plus the embedding wrapper.

Both backbones are written with plain torch (torchvision is not a dependency) and
their parameter names match the public layouts exactly
(the AstroCLIP paper, section 3.2, and the released code, PolymathicAI/AstroCLIP):

* `ResNet` / `resnet50`: torchvision's names (``conv1``, ``bn1``, ``layer1`` ...
  ``layer4`` made of Bottleneck blocks with ``conv1/bn1/conv2/bn2/conv3/bn3`` and
  ``downsample.0/.1``, ``fc``).  A standard torchvision checkpoint loads with a
  linear ``fc``; a MoCo v2 checkpoint (Stein et al. 2021, the paper's image model)
  loads with the MLP projection head ``fc.0`` / ``fc.2`` (``mlp_hidden=2048``).
* `VisionTransformer`: DINOv2's names (``patch_embed.proj``, ``cls_token``,
  ``pos_embed``, ``mask_token``, ``blocks.{i}`` or the chunked ``blocks.{c}.{i}``,
  ``norm1``, ``attn.qkv``, ``attn.proj``, ``ls1.gamma``, ``norm2``, ``mlp.fc1``,
  ``mlp.fc2``, ``ls2.gamma``, ``norm``), as in the released AstroDINO model.

`load_backbone_weights` loads such checkpoints (MoCo's ``module.encoder_q.``
prefix, DINOv2's ``teacher`` / ``backbone.`` wrapping, Lightning's
``state_dict``) and gives a clear error for a checkpoint of another architecture.

`ImageEncoder` is what the aligned model uses: it takes raw cutouts in
nanomaggies ``(B, 3, H, W)`` (bands g, r, z), does the preprocessing inside the
model (centre crop, and the Legacy Survey colour mapping for the released ViT),
runs the backbone and its embedding head, and returns ``(B, embed_dim)``.
"""

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from astroclip.exceptions import InputError
from astroclip.inputs import grid
from astroclip.inputs.images import center_crop
from astroclip.models.heads import CrossAttentionHead

__all__ = [
    "Bottleneck", "ResNet", "resnet50",
    "PatchEmbed", "Attention", "LayerScale", "ViTMlp", "ViTBlock", "BlockChunk",
    "VisionTransformer", "load_backbone_weights",
    "extract_backbone_state_dict", "ImageEncoder", "EMBEDDINGS",
]


# ============================================================================ ResNet


def _conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck block (stride on the 3x3 convolution), torchvision names."""

    expansion = 4

    def __init__(self, inplanes, planes, *, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Bottleneck ResNet with torchvision's parameter names.

    Parameters
    ----------
    layers : sequence of 4 int, optional
        Blocks per stage; ``(3, 4, 6, 3)`` is ResNet-50.
    width : int, optional
        Channels of the stem (64 in ResNet-50); stage ``k`` has ``width * 2**k``
        bottleneck channels and ``4 * width * 2**k`` output channels.
    in_channels : int, optional
        Input channels (3: g, r, z).
    num_classes : int or None, optional
        Output size of ``fc``; ``None`` leaves ``fc`` out (`forward` then returns
        the pooled features).
    mlp_hidden : int or None, optional
        If given, ``fc`` is the MoCo v2 projection MLP
        ``Linear(F, mlp_hidden) - ReLU - Linear(mlp_hidden, num_classes)`` (names
        ``fc.0``, ``fc.2``) instead of a single linear layer.
    zero_init_residual : bool, optional
        Start every block's last BatchNorm at zero (torchvision option).

    Examples
    --------
    >>> import torch
    >>> from astroclip.models.image import ResNet
    >>> net = ResNet(layers=(1, 1, 1, 1), width=8, num_classes=16)
    >>> net(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 16])
    >>> net.num_features
    256
    """

    def __init__(self, *, layers=(3, 4, 6, 3), width=64, in_channels=3, num_classes=1000,
                 mlp_hidden=None, zero_init_residual=False):
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers={layers} must be 4 positive block counts, e.g. (3, 4, 6, 3)")
        self.in_channels = int(in_channels)
        self.inplanes = int(width)
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = width * 8 * Bottleneck.expansion
        if num_classes is None:
            self.fc = None
        elif mlp_hidden is None:
            self.fc = nn.Linear(self.num_features, num_classes)
        else:
            self.fc = nn.Sequential(nn.Linear(self.num_features, mlp_hidden), nn.ReLU(inplace=True),
                                    nn.Linear(mlp_hidden, num_classes))
        self.out_features = self.num_features if num_classes is None else int(num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            out = planes * Bottleneck.expansion
            downsample = nn.Sequential(_conv1x1(self.inplanes, out, stride), nn.BatchNorm2d(out))
        mods = [Bottleneck(self.inplanes, planes, stride=stride, downsample=downsample)]
        self.inplanes = planes * Bottleneck.expansion
        mods += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward_features(self, x):
        """Convolutional part: pooled features ``(B, num_features)``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ResNet expects images of shape (B, {self.in_channels}, H, W), got "
                             f"{tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x):
        x = self.forward_features(x)
        return x if self.fc is None else self.fc(x)


def resnet50(**kwargs):
    """ResNet-50 (torchvision layout); keyword arguments as `ResNet`.

    Examples
    --------
    >>> from astroclip.models.image import resnet50
    >>> net = resnet50(num_classes=128, mlp_hidden=2048)   # MoCo v2 query encoder
    >>> sum(p.numel() for p in net.parameters()) // 10**6
    27
    """
    kwargs.setdefault("layers", (3, 4, 6, 3))
    kwargs.setdefault("width", 64)
    return ResNet(**kwargs)


# ============================================================================== ViT


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens (DINOv2 ``patch_embed``, ``proj`` is a Conv2d)."""

    def __init__(self, *, img_size=144, patch_size=12, in_chans=3, embed_dim=1024):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size={img_size} is not a multiple of patch_size={patch_size}")
        self.img_size = int(img_size)
        self.patch_size = int(patch_size)
        self.in_chans = int(in_chans)
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"the ViT expects images of shape (B, {self.in_chans}, H, W), got "
                             f"{tuple(x.shape)}")
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"the ViT was built for {self.img_size}x{self.img_size} images, got "
                             f"{x.shape[-2]}x{x.shape[-1]}; crop or resize the images "
                             "(ImageEncoder centre-crops for you)")
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (DINOv2 names)."""

    def __init__(self, dim, *, num_heads=8, qkv_bias=True, proj_bias=True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = int(num_heads)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    """Per-channel residual scale (parameter ``gamma``)."""

    def __init__(self, dim, init_values=1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class ViTMlp(nn.Module):
    """Feed-forward layer ``fc1 - GELU - fc2`` (DINOv2 names)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    """Pre-LayerNorm ViT block with layer scale, DINOv2's ``Block``."""

    def __init__(self, dim, *, num_heads, mlp_ratio=4.0, layerscale_init=1e-5, eps=1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads=num_heads)
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = ViTMlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class BlockChunk(nn.ModuleList):
    """DINOv2's chunk of blocks (leading `nn.Identity` keep the global indices)."""

    def forward(self, x):
        for blk in self:
            x = blk(x)
        return x


class VisionTransformer(nn.Module):
    """ViT with DINOv2's parameter names (the released AstroDINO backbone).

    Parameters
    ----------
    img_size : int, optional
        Side of the (square) input; 144 for the released model.
    patch_size : int, optional
        Patch side (12).
    in_chans : int, optional
        Input channels (3).
    embed_dim, depth, num_heads : int, optional
        Width, number of blocks, attention heads (1024, 24, 16 for ViT-L).
    mlp_ratio : float, optional
        Hidden width of the feed-forward layer relative to ``embed_dim``.
    layerscale_init : float or None, optional
        Initial layer-scale value; ``None`` removes ``ls1`` / ``ls2``.
    block_chunks : int, optional
        0 names the blocks ``blocks.{i}``; ``k > 0`` uses DINOv2's chunked layout
        ``blocks.{c}.{i}`` with ``k`` chunks (``depth`` must be divisible by ``k``).
    num_register_tokens : int, optional
        DINOv2 "registers" (``register_tokens``), 0 for the released model.

    Notes
    -----
    `forward_features` is DINOv2's path (class token, position embedding) and
    returns the normalised class token.  `forward_patch_tokens` is the path of
    the released AstroCLIP image head: patch embedding, blocks and final norm,
    *without* class token or position embedding, giving ``(B, N, embed_dim)``.

    Examples
    --------
    >>> import torch
    >>> from astroclip.models.image import VisionTransformer
    >>> vit = VisionTransformer(img_size=48, embed_dim=32, depth=2, num_heads=4, block_chunks=2)
    >>> vit.forward_patch_tokens(torch.zeros(2, 3, 48, 48)).shape
    torch.Size([2, 16, 32])
    >>> "blocks.1.1.attn.qkv.weight" in vit.state_dict()
    True
    """

    def __init__(self, *, img_size=144, patch_size=12, in_chans=3, embed_dim=1024, depth=24,
                 num_heads=16, mlp_ratio=4.0, layerscale_init=1e-5, block_chunks=0,
                 num_register_tokens=0):
        super().__init__()
        self.embed_dim = self.num_features = int(embed_dim)
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=embed_dim)
        n = self.patch_embed.num_patches
        self.num_patches = n
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.num_register_tokens = int(num_register_tokens)
        if self.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        else:
            self.register_tokens = None
        blocks = [ViTBlock(embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio,
                           layerscale_init=layerscale_init) for _ in range(depth)]
        if block_chunks:
            if depth % block_chunks:
                raise ValueError(f"depth={depth} is not divisible by block_chunks={block_chunks}")
            size = depth // block_chunks
            self.blocks = nn.ModuleList(
                BlockChunk([nn.Identity()] * i + blocks[i:i + size]) for i in range(0, depth, size))
        else:
            self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _run_blocks(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_features(self, x, *, masks=None):
        """DINOv2's path: ``{"x_norm_clstoken": (B, D), "x_norm_patchtokens": (B, N, D)}``."""
        x = self.patch_embed(x)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        if self.register_tokens is not None:
            x = torch.cat((x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]), 1)
        x = self._run_blocks(x)
        return {"x_norm_clstoken": x[:, 0],
                "x_norm_patchtokens": x[:, 1 + self.num_register_tokens:]}

    def forward_patch_tokens(self, x):
        """Released AstroCLIP path: normalised patch tokens ``(B, N, D)``, no class token
        and no position embedding."""
        return self._run_blocks(self.patch_embed(x))

    def forward(self, x):
        return self.forward_features(x)["x_norm_clstoken"]


# =========================================================================== loading


def _as_state_dict(source):
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, dict):
        raise ValueError(f"cannot read a state dict from an object of type {type(source).__name__}")
    for key in ("state_dict", "model", "teacher"):
        if key in source and isinstance(source[key], dict):
            return source[key]
    return source


def extract_backbone_state_dict(source):
    """The backbone tensors of a checkpoint, with wrapper prefixes removed.

    Understands plain state dicts, ``{"state_dict": ...}`` (Lightning, MoCo),
    ``{"teacher": ...}`` (DINOv2 training checkpoints) and the prefixes
    ``module.encoder_q.`` (MoCo v2: the query encoder is kept, the key encoder and
    the queue are dropped), ``module.``, ``backbone.`` and ``image_encoder.backbone.``.

    Parameters
    ----------
    source : str, `~pathlib.Path` or dict
        A ``.pt``/``.pth``/``.ckpt`` file (read with ``weights_only=True``), a
        ``.safetensors`` file, or an already loaded dict.

    Returns
    -------
    dict
        Name -> tensor.

    Examples
    --------
    >>> import torch
    >>> from astroclip.models.image import extract_backbone_state_dict
    >>> sd = {"module.encoder_q.conv1.weight": torch.zeros(1),
    ...       "module.encoder_k.conv1.weight": torch.zeros(1), "module.queue": torch.zeros(1)}
    >>> list(extract_backbone_state_dict({"state_dict": sd}))
    ['conv1.weight']
    """
    sd = _as_state_dict(source)
    keys = list(sd)
    for prefix in ("module.encoder_q.", "encoder_q.", "image_encoder.backbone.", "module.",
                   "backbone.", "model."):
        if keys and any(k.startswith(prefix) for k in keys):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            keys = list(sd)
    return OrderedDict(sd)


def load_backbone_weights(model, source, *, include_head=True):
    """Load a torchvision / MoCo v2 ResNet or a DINOv2 ViT checkpoint into ``model``.

    Parameters
    ----------
    model : `ResNet` or `VisionTransformer`
        The backbone, built with the checkpoint's architecture.
    source : str, `~pathlib.Path` or dict
        Checkpoint file or state dict (see `extract_backbone_state_dict`).
    include_head : bool, optional
        For a ResNet, also load ``fc``.  With False the checkpoint's ``fc`` (a
        classifier or a projection head of another size) is ignored and the
        model's ``fc`` keeps its initialisation.

    Returns
    -------
    model
        The same module, for chaining.

    Raises
    ------
    ValueError
        If names or shapes do not match: the checkpoint was made for another
        architecture (the message lists the first differences and the fix).

    Examples
    --------
    >>> from astroclip.models.image import ResNet, load_backbone_weights
    >>> src = ResNet(layers=(1, 1, 1, 1), width=8, num_classes=4)
    >>> dst = ResNet(layers=(1, 1, 1, 1), width=8, num_classes=4)
    >>> _ = load_backbone_weights(dst, {"state_dict": {"module." + k: v
    ...                                   for k, v in src.state_dict().items()}})
    >>> bool((dst.conv1.weight == src.conv1.weight).all())
    True
    """
    sd = extract_backbone_state_dict(source)
    own = model.state_dict()
    if not include_head:
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
        own = {k: v for k, v in own.items() if not k.startswith("fc.")}
    if isinstance(model, VisionTransformer):
        # DINOv2 checkpoints may carry a head of the training objective: not the backbone's
        heads = ("head.", "dino_head.", "ibot_head.")
        sd = {k: v for k, v in sd.items() if not k.startswith(heads)}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with other shapes (e.g. {k}: checkpoint "
                         f"{tuple(sd[k].shape)}, model {tuple(own[k].shape)})")
        hint = ""
        if any(k.startswith("fc.") for k in missing + unexpected + wrong):
            hint = (" The classifier/projection head differs: build the ResNet with the "
                    "checkpoint's num_classes/mlp_hidden (MoCo v2: mlp_hidden=2048, "
                    "num_classes=128) or pass include_head=False.")
        raise ValueError(f"checkpoint does not fit this {type(model).__name__}: "
                         + "; ".join(parts) + ". It was made for another architecture; build the "
                         "model with the checkpoint's preset." + hint)
    model.load_state_dict(sd, strict=include_head)
    return model


# ============================================================================ encoder


_BACKBONES = {"resnet": ResNet, "vit": VisionTransformer}
#: How `ImageEncoder` embeds: ``"head"`` (its trained embedding head) or
#: ``"class_token"`` (a ViT's normalised class token, the AstroDINO embedding).
EMBEDDINGS = ("head", "class_token")


class ImageEncoder(nn.Module):
    """Image backbone + embedding head, with the input preprocessing inside the model.

    Input: raw cutouts ``(B, 3, H, W)`` in nanomaggies, bands g, r, z, with
    ``H, W >= crop_size`` (152 as stored).  Output: ``(B, embed_dim)``.

    Parameters
    ----------
    backbone : {"resnet", "vit"}
        Backbone family.
    backbone_kwargs : dict, optional
        Constructor arguments of `ResNet` or `VisionTransformer`.  For a ResNet
        the embedding head is its ``fc`` (the MoCo v2 projection MLP when
        ``mlp_hidden`` is set; ``num_classes`` is set to ``embed_dim``).
    embed_dim : int, optional
        Size of the embedding: 128 by default; with
        ``embedding="class_token"`` the ViT's width (the only allowed value).
    crop_size : int, optional
        Centre crop applied first (96 for the paper's ResNet, 144 for the ViT).
    input_mapping : {"flux", "color_map"}, optional
        ``"flux"`` feeds the cropped nanomaggies as they are (paper ResNet);
        ``"color_map"`` applies the Legacy Survey colour mapping (released ViT).
    head_heads : int, optional
        Attention heads of the ViT's cross-attention pooling head.
    dropout : float, optional
        Dropout of the ViT's pooling head.
    embedding : {"head", "class_token"}, optional
        ``"head"``: the embedding head (cross-attention for the ViT, ``fc`` for
        the ResNet).  ``"class_token"`` (ViT only): no head, the embedding is
        the backbone's normalised class token (DINOv2's ``x_norm_clstoken``),
        the embedding of the released AstroDINO model; `with_head` gives such
        an encoder a fresh head for the alignment.

    Notes
    -----
    ViT layout (as the released ``image_encoder.``): ``backbone`` (DINOv2
    names) and ``cross_attention`` (`~astroclip.models.heads.CrossAttentionHead`:
    a learned query attending over the patch tokens, its MLP without residual;
    the released ``image_encoder.mlp.`` is our ``image_encoder.cross_attention.mlp.``).
    ResNet layout: ``backbone`` only, whose ``fc`` is the dense head.
    `backbone_parameters` / `head_parameters` split the parameters for the
    freezing policies; ``config`` holds the constructor arguments (JSON-able).

    Examples
    --------
    >>> import torch
    >>> from astroclip.models.image import ImageEncoder
    >>> enc = ImageEncoder(backbone="vit", embed_dim=16, backbone_kwargs=dict(
    ...     img_size=48, embed_dim=24, depth=1, num_heads=2), input_mapping="color_map")
    >>> enc(torch.rand(2, 3, 152, 152) * 0.1).shape
    torch.Size([2, 16])
    >>> dino = ImageEncoder(backbone="vit", embedding="class_token", input_mapping="color_map",
    ...                     backbone_kwargs=dict(img_size=48, embed_dim=24, depth=1, num_heads=2))
    >>> dino.encode_image(torch.rand(2, 3, 152, 152) * 0.1).shape
    torch.Size([2, 24])
    """

    #: Model family written in ``config.json`` (`astroclip.models.weights.save_model`).
    family = "image"

    def __init__(self, *, backbone="resnet", backbone_kwargs=None, embed_dim=None, crop_size=None,
                 input_mapping="flux", head_heads=4, dropout=0.0, embedding="head"):
        super().__init__()
        if backbone not in _BACKBONES:
            raise ValueError(f"unknown image backbone {backbone!r}; choose one of "
                             f"{sorted(_BACKBONES)}")
        if input_mapping not in ("flux", "color_map"):
            raise ValueError(f"input_mapping={input_mapping!r} must be 'flux' or 'color_map'")
        if embedding not in EMBEDDINGS:
            raise InputError(f"embedding={embedding!r} must be one of {EMBEDDINGS}")
        if embedding == "class_token" and backbone != "vit":
            raise InputError("embedding='class_token' needs a ViT backbone (backbone='vit'); "
                             "a ResNet embeds with its fc head (embedding='head')")
        kwargs = dict(backbone_kwargs or {})
        self.backbone_name = backbone
        self.embedding = embedding
        self.input_mapping = input_mapping
        self.n_bands = len(grid.BANDS)
        if backbone == "resnet":
            self.embed_dim = 128 if embed_dim is None else int(embed_dim)
            kwargs["num_classes"] = self.embed_dim
            kwargs.setdefault("in_channels", self.n_bands)
            self.backbone = ResNet(**kwargs)
            self.crop_size = int(crop_size or grid.CROP_SIZE_PAPER)
            self.cross_attention = None
        else:
            kwargs.setdefault("img_size", crop_size or grid.CROP_SIZE_RELEASED)
            self.backbone = VisionTransformer(**kwargs)
            self.crop_size = self.backbone.patch_embed.img_size
            if crop_size is not None and int(crop_size) != self.crop_size:
                raise ValueError(f"crop_size={crop_size} differs from the ViT's "
                                 f"img_size={self.crop_size}")
            self.embed_dim = self._vit_embed_dim(embed_dim)
            # released image side: learned query over the patch tokens, MLP without residual
            self.cross_attention = None if embedding == "class_token" else CrossAttentionHead(
                self.embed_dim, self.backbone.embed_dim, num_heads=head_heads, dropout=dropout,
                residual=False)
        self.config = dict(backbone=backbone, backbone_kwargs=dict(backbone_kwargs or {}),
                           embed_dim=self.embed_dim,
                           crop_size=None if crop_size is None else int(crop_size),
                           input_mapping=input_mapping, head_heads=int(head_heads),
                           dropout=float(dropout), embedding=embedding)

    def _vit_embed_dim(self, embed_dim):
        if self.embedding == "head":
            return 128 if embed_dim is None else int(embed_dim)
        width = self.backbone.embed_dim
        if embed_dim is not None and int(embed_dim) != width:
            raise InputError(f"embed_dim={embed_dim} but a class-token embedding has the ViT's "
                             f"width {width}; leave embed_dim out (or use embedding='head')")
        return width

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def with_head(self, *, embed_dim=None, head_heads=None, dropout=None):
        """This encoder with a freshly initialised embedding head (for the alignment).

        The backbone (and its weights) is shared with ``self``.  An encoder that
        already has a head is returned unchanged.

        Parameters
        ----------
        embed_dim, head_heads, dropout : optional
            The head's width, attention heads and dropout (default: this
            encoder's configuration; width 128 for a class-token encoder).

        Returns
        -------
        `ImageEncoder`

        Examples
        --------
        >>> from astroclip.models.image import ImageEncoder
        >>> dino = ImageEncoder(backbone="vit", embedding="class_token",
        ...                     backbone_kwargs=dict(img_size=48, embed_dim=24, depth=1,
        ...                                          num_heads=2))
        >>> dino.with_head(embed_dim=16).embed_dim
        16
        """
        if self.embedding == "head":
            return self
        cfg = dict(self.config, embedding="head",
                   embed_dim=128 if embed_dim is None else int(embed_dim))
        if head_heads is not None:
            cfg["head_heads"] = int(head_heads)
        if dropout is not None:
            cfg["dropout"] = float(dropout)
        with torch.device("meta"):
            out = ImageEncoder(**cfg)
        out.backbone = self.backbone
        out.cross_attention = CrossAttentionHead(
            out.embed_dim, self.backbone.embed_dim, num_heads=cfg["head_heads"],
            dropout=cfg["dropout"], residual=False).to(next(self.parameters()).device)
        return out

    def preprocess(self, images):
        """Check the input, centre crop and (ViT) colour map: what the backbone sees."""
        if not torch.is_tensor(images):
            images = torch.as_tensor(images)
        if images.ndim != 4 or images.shape[1] != self.n_bands:
            raise ValueError(f"images must have shape (B, {self.n_bands}, H, W) with bands "
                             f"{','.join(grid.BANDS)} in that order, got {tuple(images.shape)}")
        x = center_crop(images, self.crop_size, name="the images",
                        fix=f"provide cutouts of at least {self.crop_size} pixels "
                            f"({grid.IMAGE_SIZE} as stored)").float()
        if self.input_mapping == "color_map":
            # the one implementation of the mapping (numpy and torch, differentiable)
            from astroclip.inputs.images import color_map
            x = color_map(x)
        return x

    def backbone_parameters(self):
        """Parameters of the part the paper keeps frozen (conv layers / the ViT)."""
        if self.backbone_name == "resnet":
            return [p for n, p in self.backbone.named_parameters() if not n.startswith("fc.")]
        return list(self.backbone.parameters())

    def head_parameters(self):
        """Parameters of the dense embedding head trained during alignment."""
        if self.backbone_name == "resnet":
            return list(self.backbone.fc.parameters())
        if self.cross_attention is None:
            return []
        return list(self.cross_attention.parameters())

    def backbone_modules(self):
        """Modules to keep in eval mode when the backbone is frozen."""
        if self.backbone_name == "resnet":
            return [m for n, m in self.backbone.named_children() if n != "fc"]
        return [self.backbone]

    def features(self, x):
        """Backbone output of preprocessed images: pooled (ResNet), patch tokens (ViT with a
        head) or the normalised class token (``embedding="class_token"``)."""
        if self.backbone_name == "resnet":
            return self.backbone.forward_features(x)
        if self.embedding == "class_token":
            return self.backbone(x)
        return self.backbone.forward_patch_tokens(x)

    def head(self, feats, *, return_weights=False):
        """Embedding head on backbone features (the identity for a class-token embedding)."""
        if self.backbone_name == "resnet":
            out, weights = self.backbone.fc(feats), None
        elif self.cross_attention is None:
            if return_weights:
                raise InputError("a class-token embedding has no attention head, hence no "
                                 "attention weights; use an encoder with embedding='head'")
            out, weights = feats, None
        elif return_weights:
            out, weights = self.cross_attention(feats, return_weights=True)
        else:
            out, weights = self.cross_attention(feats), None
        return (out, weights) if return_weights else out

    def forward(self, images, *, return_weights=False):
        x = self.preprocess(images)
        return self.head(self.features(x), return_weights=return_weights)

    def encode_image(self, images):
        """Raw cutouts ``(B, 3, H, W)`` (g, r, z nanomaggies) -> embeddings ``(B, embed_dim)``."""
        return self(images)
