"""The spectrum transformer ("SpecFormer") and its masked-prediction head.

Architecture (the AstroCLIP paper, section 3.2, and the released SpecFormer of
PolymathicAI/AstroCLIP), all inside the module so that its input is the raw flux
on the DESI grid, shape (B, 7781):

1. per-spectrum standardisation ``x = (flux - mu) / sigma`` with
   ``mu = mean(flux)`` and ``sigma = max(std(flux), 0.2)`` (``std`` with
   Bessel's correction, as in the released code);
2. tokens: windows of 20 pixels with stride 10 (only full windows: 777 tokens),
   each with 2 leading zero features (22 features), built with
   `torch.Tensor.unfold` (no Python loop);
3. a statistics token first, holding ``(mu - 2) / 2`` and ``(sigma - 2) / 8``
   in its first two features: 778 tokens x 22 features;
4. ``data_embed`` Linear(22 -> d) plus a learned absolute ``position_embed``
   (table of 800);
5. pre-LayerNorm `~astroclip.models.transformer.TransformerBlock` s, a
   ``final_layernorm``;
6. ``head`` Linear(d -> 22) predicting every token (masked pretraining).

Masked pretraining zeroes contiguous runs of data tokens (never the statistics
token) and scores the prediction against the unmasked tokens on the zeroed
data entries only (`random_token_mask`, `SpectrumEncoder.mask_tokens`,
`masked_mse`).

`SpectrumEmbedder` puts the cross-attention pooling head of
`astroclip.models.heads` on top of the encoder (the spectrum side of the
aligned model).
"""


import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..inputs import grid
from .heads import CrossAttentionHead
from .transformer import TransformerBlock

__all__ = ["SpectrumEncoder", "SpectrumEmbedder", "ConvStem", "random_token_mask", "masked_mse",
           "MASK_PLACEMENTS"]

#: How masked runs are placed: ``"anywhere"`` (non-overlapping, uniformly at
#: random; the paper) or ``"per_section"`` (one run inside each of ``n_runs``
#: equal sections; the released model).
MASK_PLACEMENTS = ("anywhere", "per_section")


def random_token_mask(batch_size, n_tokens, *, n_runs=6, run_length=30, placement="anywhere",
                      skip_first=1, generator=None, device="cpu"):
    """Boolean mask of contiguous runs of tokens, vectorised over the batch.

    Parameters
    ----------
    batch_size : int
        Number of sequences.
    n_tokens : int
        Sequence length, statistics token included.
    n_runs : int, optional
        Runs per sequence (6).
    run_length : int, optional
        Tokens per run (paper 30, released 50).
    placement : {"anywhere", "per_section"}, optional
        ``"anywhere"``: runs placed uniformly at random without overlap;
        ``"per_section"``: the maskable tokens are cut into ``n_runs`` equal
        sections and one run is placed uniformly inside each.
    skip_first : int, optional
        Leading tokens never masked (1: the statistics token).
    generator : `torch.Generator`, optional
        Source of randomness (on ``device``) for reproducible masks.
    device : str or `torch.device`, optional
        Device of the result.

    Returns
    -------
    `torch.Tensor`
        Bool (batch_size, n_tokens), True on masked tokens; exactly
        ``n_runs * run_length`` per row.

    Examples
    --------
    >>> from astroclip.models.spectrum import random_token_mask
    >>> m = random_token_mask(4, 778)
    >>> m.shape, m.sum(1).tolist(), bool(m[:, 0].any())
    (torch.Size([4, 778]), [180, 180, 180, 180], False)
    """
    if placement not in MASK_PLACEMENTS:
        raise ValueError(f"unknown mask placement {placement!r}; choose one of {MASK_PLACEMENTS}")
    n = int(n_tokens) - int(skip_first)
    if n_runs < 0 or run_length < 1:
        raise ValueError(f"need n_runs >= 0 and run_length >= 1, got {n_runs}, {run_length}")
    mask = torch.zeros(batch_size, n_tokens, dtype=torch.bool, device=device)
    if n_runs == 0:
        return mask
    if placement == "anywhere":
        slack = n - n_runs * run_length
        if slack < 0:
            raise ValueError(f"{n_runs} runs of {run_length} tokens do not fit in {n} tokens")
        # choose n_runs sorted distinct slots among slack + n_runs; run i starts at
        # slot_i + i * (run_length - 1): non-overlapping and uniform over placements
        keys = torch.rand(batch_size, slack + n_runs, generator=generator, device=device)
        slots = keys.argsort(dim=1)[:, :n_runs].sort(dim=1).values
        starts = slots + torch.arange(n_runs, device=device) * (run_length - 1)
    else:
        section = n // n_runs
        if run_length > section:
            raise ValueError(f"runs of {run_length} tokens do not fit in sections of {section} "
                             f"tokens ({n} tokens / {n_runs} runs)")
        offsets = torch.randint(0, section - run_length + 1, (batch_size, n_runs),
                                generator=generator, device=device)
        starts = offsets + torch.arange(n_runs, device=device) * section
    idx = (starts[..., None] + torch.arange(run_length, device=device)).reshape(batch_size, -1)
    mask.scatter_(1, idx + skip_first, True)
    return mask


def masked_mse(prediction, target, mask, *, features=slice(2, None)):
    """Mean squared error over the masked tokens' data entries only.

    Parameters
    ----------
    prediction, target : `torch.Tensor`
        Tokens (B, L, F).
    mask : `torch.Tensor`
        Bool (B, L), True on masked tokens.
    features : slice, optional
        Entries of a token that carry data (the 2 leading padding features
        are always zero and are left out).

    Returns
    -------
    `torch.Tensor`
        Scalar loss (0 when nothing is masked).
    """
    diff = (prediction[..., features].float() - target[..., features].float()) ** 2
    w = mask[..., None].to(diff.dtype)
    count = w.sum() * diff.shape[-1]
    return (diff * w).sum() / count.clamp_min(1.0)


class ConvStem(nn.Module):
    """Convolutional tokenizer: the pixels of non-overlapping tokens -> one vector per token.

    The data tokens (B, L, window) are laid end to end as a pixel sequence and go
    through blocks ``Conv1d(k=5) - GELU - MaxPool`` whose pools multiply to
    ``window`` (e.g. 2, 2, 2, 5 for 40-pixel tokens), then ``Linear(C -> d)``:
    output (B, L, d), token ``i`` made from its own pixels and their neighbours.
    Translation-equivariant features make a redshifted line look the same wherever
    it falls inside a token.  Needs ``stride == window``.

    Examples
    --------
    >>> import torch
    >>> from astroclip.models.spectrum import ConvStem
    >>> ConvStem((4, 8, 8, 8), window=40, stride=40, embed_dim=16)(torch.zeros(2, 5, 40)).shape
    torch.Size([2, 5, 16])
    """

    def __init__(self, channels, *, window, stride, embed_dim):
        super().__init__()
        if stride != window:
            raise ValueError(f"a conv stem needs non-overlapping tokens (stride == window), got "
                             f"window={window}, stride={stride}")
        pools = _stem_pools(window, len(channels))
        layers, c_in = [], 1
        for c, pool in zip(channels, pools):
            layers += [nn.Conv1d(c_in, c, 5, padding=2), nn.GELU()]
            if pool > 1:
                layers.append(nn.MaxPool1d(pool))
            c_in = c
        self.net = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, embed_dim)
        self.window = int(window)

    def forward(self, pixels):
        b, n, w = pixels.shape
        x = self.net(pixels.reshape(b, 1, n * w))          # (B, C, n)
        return self.proj(x.transpose(1, 2))


def _stem_pools(window, n_blocks):
    """Pool sizes, one per block, whose product is ``window`` (largest factors last)."""
    factors, w, f = [], int(window), 2
    while w > 1:
        while w % f == 0:
            factors.append(f)
            w //= f
        f += 1
    if len(factors) > n_blocks:  # merge the smallest factors until they fit
        while len(factors) > n_blocks:
            factors = sorted(factors)
            factors = sorted([factors[0] * factors[1]] + factors[2:])
    return [1] * (n_blocks - len(factors)) + sorted(factors)


class SpectrumEncoder(nn.Module):
    """Transformer over tokenised, standardised spectra with a masked-prediction head.

    Parameters
    ----------
    embed_dim : int, optional
        Token width (768 in the paper).
    num_layers : int, optional
        Transformer blocks (6).
    num_heads : int, optional
        Attention heads (6).
    window : int, optional
        Pixels per token (20).
    stride : int, optional
        Pixels between token starts (10).
    max_len : int, optional
        Rows of the position table (800).
    n_pixels : int, optional
        Input length; `astroclip.inputs.grid.N_PIXELS` (7781) for DESI.
    mlp_ratio : float, optional
        MLP hidden width in units of ``embed_dim`` (4).
    dropout : float, optional
        Dropout after the embedding and inside the blocks (training only).
    min_std : float, optional
        Floor of the standardisation scale (0.2).
    layernorm_eps : float, optional
        LayerNorm epsilon (1e-5).
    mask_runs, mask_run_length, mask_placement : optional
        Default masking of the pretraining (see `random_token_mask`).
    stem_channels : sequence of int, optional
        Channels of a `ConvStem` making the data-token embeddings from their
        pixels (needs ``stride == window``); empty (the default, the paper):
        ``data_embed`` alone, a Linear on each token's features.

    Examples
    --------
    >>> import torch
    >>> from astroclip.models.spectrum import SpectrumEncoder
    >>> model = SpectrumEncoder(embed_dim=32, num_layers=1, num_heads=2).eval()
    >>> flux = torch.rand(2, 7781)
    >>> model(flux).shape
    torch.Size([2, 778, 32])
    >>> model.encode_spectrum(flux).shape     # mean over the 778 output tokens
    torch.Size([2, 32])
    >>> model.tokenize(flux).shape
    torch.Size([2, 778, 22])
    """

    #: Model family written in ``config.json`` (`astroclip.models.weights.save_model`).
    family = "spectrum"

    def __init__(self, *, embed_dim=768, num_layers=6, num_heads=6, window=20, stride=10,
                 max_len=800, n_pixels=grid.N_PIXELS, mlp_ratio=4.0, dropout=0.0, min_std=0.2,
                 layernorm_eps=1e-5, mask_runs=6, mask_run_length=30, mask_placement="anywhere",
                 stem_channels=()):
        super().__init__()
        if window < 1 or stride < 1 or n_pixels < window:
            raise ValueError(f"need 1 <= window <= n_pixels and stride >= 1, got window={window}, "
                             f"stride={stride}, n_pixels={n_pixels}")
        if mask_placement not in MASK_PLACEMENTS:
            raise ValueError(f"unknown mask_placement {mask_placement!r}; choose one of "
                             f"{MASK_PLACEMENTS}")
        self.config = dict(embed_dim=int(embed_dim), num_layers=int(num_layers),
                           num_heads=int(num_heads), window=int(window), stride=int(stride),
                           max_len=int(max_len), n_pixels=int(n_pixels),
                           mlp_ratio=float(mlp_ratio), dropout=float(dropout),
                           min_std=float(min_std), layernorm_eps=float(layernorm_eps),
                           mask_runs=int(mask_runs), mask_run_length=int(mask_run_length),
                           mask_placement=str(mask_placement))
        stem_channels = tuple(int(c) for c in stem_channels)
        if stem_channels:  # recorded only when used: the paper configs stay as they were
            self.config["stem_channels"] = list(stem_channels)
        self.embed_dim = int(embed_dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.window = int(window)
        self.stride = int(stride)
        self.n_pixels = int(n_pixels)
        self.min_std = float(min_std)
        self.n_data_tokens = (self.n_pixels - self.window) // self.stride + 1
        self.n_tokens = self.n_data_tokens + 1
        self.token_features = self.window + 2
        if self.n_tokens > max_len:
            raise ValueError(f"{self.n_tokens} tokens do not fit in a position table of "
                             f"max_len={max_len}; increase max_len or the stride")

        self.data_embed = nn.Linear(self.token_features, embed_dim)
        self.stem = None
        if stem_channels:
            self.stem = ConvStem(stem_channels, window=self.window, stride=self.stride,
                                 embed_dim=embed_dim)
        self.position_embed = nn.Embedding(max_len, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, dropout=dropout,
                             layernorm_eps=layernorm_eps) for _ in range(num_layers))
        self.final_layernorm = nn.LayerNorm(embed_dim, eps=layernorm_eps)
        self.head = nn.Linear(embed_dim, self.token_features)
        self.reset_parameters()

    # ----------------------------------------------------------- set-up
    def reset_parameters(self):
        """Initialise as the released SpecFormer (truncated normals, zero biases)."""
        std = self.embed_dim ** -0.5
        for weight in (self.data_embed.weight, self.position_embed.weight):
            nn.init.trunc_normal_(weight, std=std, a=-3 * std, b=3 * std)
        nn.init.zeros_(self.data_embed.bias)
        for block in self.blocks:
            for module in block.modules():
                if isinstance(module, nn.Linear):
                    s = (2 * module.in_features * self.num_layers) ** -0.5
                    nn.init.trunc_normal_(module.weight, std=s, a=-3 * s, b=3 * s)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, nn.LayerNorm):
                    module.reset_parameters()
        self.final_layernorm.reset_parameters()
        s = self.embed_dim ** -0.5
        nn.init.trunc_normal_(self.head.weight, std=s, a=-3 * s, b=3 * s)
        nn.init.zeros_(self.head.bias)

    def token_wavelengths(self):
        """Central wavelength (Angstrom) of each token; NaN for the statistics token.

        Returns
        -------
        `numpy.ndarray`
            Shape (n_tokens,).  Pixel-index centres when the model is not on
            the DESI grid (``n_pixels != 7781``).
        """
        starts = np.arange(self.n_data_tokens) * self.stride
        centre = starts + (self.window - 1) / 2.0
        if self.n_pixels == grid.N_PIXELS:
            centre = grid.WAVE_MIN + grid.WAVE_STEP * centre
        return np.concatenate([[np.nan], centre])

    # ----------------------------------------------------------- input
    def check_flux(self, flux):
        """Validate a flux batch; return it as a floating tensor.

        Raises
        ------
        TypeError, ValueError
            Not a tensor, wrong shape, not on the grid, or not finite.
        """
        if not isinstance(flux, torch.Tensor):
            raise TypeError(f"flux must be a torch.Tensor of shape (batch, {self.n_pixels}), got "
                            f"{type(flux).__name__}; convert arrays with torch.as_tensor")
        if flux.ndim != 2:
            hint = " (add a batch axis: flux[None])" if flux.ndim == 1 else ""
            raise ValueError(f"flux must have shape (batch, {self.n_pixels}), got "
                             f"{tuple(flux.shape)}{hint}")
        if flux.shape[1] != self.n_pixels:
            raise ValueError(
                f"spectra have {flux.shape[1]} pixels but the model expects {self.n_pixels} "
                f"pixels on the DESI grid ({grid.WAVE_MIN:g}-{grid.WAVE_MAX:g} Angstrom, step "
                f"{grid.WAVE_STEP:g}); resample them first with astroclip.prepare_spectra")
        flux = flux.float()  # statistics in float32 whatever the input and model dtypes
        bad = ~torch.isfinite(flux)
        if bad.any():
            rows = torch.nonzero(bad.any(dim=1)).flatten()[:10].tolist()
            raise ValueError(f"flux contains NaN or infinite values (rows {rows}); set bad "
                             "pixels to 0 with ivar 0 (astroclip.prepare_spectra does this)")
        return flux

    def standardize(self, flux):
        """``(flux - mu) / sigma`` with ``sigma = max(std, min_std)``; returns (x, mu, sigma).

        Rows whose float32 sums overflow (fluxes near 1e19 and above) get their
        statistics from the flux divided by its largest absolute value, so a
        huge pixel gives a huge ``sigma``, never NaN.
        """
        mu = flux.mean(dim=1, keepdim=True)
        sigma = flux.std(dim=1, keepdim=True)
        scale = flux.abs().amax(dim=1, keepdim=True).clamp_min(1.0)
        overflow = ~(torch.isfinite(mu) & torch.isfinite(sigma))
        mu = torch.where(overflow, (flux / scale).mean(dim=1, keepdim=True) * scale, mu)
        sigma = torch.where(overflow, (flux / scale).std(dim=1, keepdim=True) * scale, sigma)
        sigma = sigma.clamp_min(self.min_std)
        return (flux - mu) / sigma, mu, sigma

    def tokenize(self, flux, *, check=True):
        """Flux (B, n_pixels) -> tokens (B, n_tokens, window + 2), statistics token first."""
        if check:
            flux = self.check_flux(flux)
        x, mu, sigma = self.standardize(flux)
        data = F.pad(x.unfold(1, self.window, self.stride), (2, 0))
        stats = torch.cat([(mu - 2) / 2, (sigma - 2) / 8], dim=1)
        stats = F.pad(stats, (0, self.token_features - 2))[:, None, :]
        return torch.cat([stats, data], dim=1)

    def untokenize(self, tokens, mu=None, sigma=None):
        """Overlap-average data tokens back to pixels (B, n_pixels).

        Pixels covered by no token are NaN; with ``mu`` and ``sigma`` (B, 1)
        the standardisation is undone.
        """
        data = tokens[:, 1:, 2:]
        b = data.shape[0]
        idx = (torch.arange(self.n_data_tokens, device=data.device)[:, None] * self.stride
               + torch.arange(self.window, device=data.device)).flatten()
        total = data.new_zeros(b, self.n_pixels).index_add_(1, idx, data.reshape(b, -1))
        count = data.new_zeros(self.n_pixels).index_add_(0, idx, data.new_ones(idx.shape))
        out = total / count
        if mu is not None:
            out = out * sigma + mu
        return out

    # ----------------------------------------------------------- model
    def encode_tokens(self, tokens, *, return_attention=False):
        """Tokens (B, L, window + 2) -> output embeddings (B, L, embed_dim).

        With ``return_attention=True`` also returns the list of self-attention
        weights of every block, each (B, heads, L, L).
        """
        if tokens.ndim != 3 or tokens.shape[-1] != self.token_features:
            raise ValueError(f"tokens must have shape (batch, length, {self.token_features}), "
                             f"got {tuple(tokens.shape)}")
        n = tokens.shape[1]
        if n > self.position_embed.num_embeddings:
            raise ValueError(f"{n} tokens exceed the position table "
                             f"({self.position_embed.num_embeddings})")
        pos = torch.arange(n, device=tokens.device)
        tokens = tokens.to(self.data_embed.weight.dtype)
        if self.stem is None:
            x = self.data_embed(tokens)
        else:  # statistics token through data_embed, data tokens through the conv stem
            x = torch.cat([self.data_embed(tokens[:, :1]), self.stem(tokens[:, 1:, 2:])], dim=1)
        x = self.dropout(x + self.position_embed(pos))
        maps = []
        for block in self.blocks:
            if return_attention:
                x, w = block(x, need_weights=True)
                maps.append(w)
            else:
                x = block(x)
        x = self.final_layernorm(x)
        return (x, maps) if return_attention else x

    def forward(self, flux):
        """Flux (B, n_pixels) -> token embeddings (B, n_tokens, embed_dim)."""
        return self.encode_tokens(self.tokenize(flux))

    embed = forward

    def encode_spectrum(self, flux):
        """Flux (B, n_pixels) -> one embedding per spectrum, (B, embed_dim).

        The mean of the output tokens (statistics token included, after the
        final LayerNorm): how the reference code uses the released SpecFormer
        downstream (PolymathicAI/AstroCLIP, property estimation).  This is
        not the aligned AstroCLIP embedding space; `SpectrumEmbedder` and
        `~astroclip.models.clip.AstroCLIP` embed with their pooling head.
        """
        return self(flux).mean(dim=1)

    def predict_tokens(self, tokens):
        """Masked-prediction output: tokens (B, L, F) -> predicted tokens (B, L, F)."""
        return self.head(self.encode_tokens(tokens))

    def random_mask(self, batch_size, *, generator=None, device=None, n_runs=None,
                    run_length=None, placement=None):
        """`random_token_mask` with this model's defaults (its ``mask_*`` config)."""
        cfg = self.config
        return random_token_mask(
            batch_size, self.n_tokens,
            n_runs=cfg["mask_runs"] if n_runs is None else n_runs,
            run_length=cfg["mask_run_length"] if run_length is None else run_length,
            placement=cfg["mask_placement"] if placement is None else placement,
            generator=generator,
            device=self.data_embed.weight.device if device is None else device)

    @staticmethod
    def mask_tokens(tokens, mask):
        """Zero the tokens where ``mask`` (B, L) is True; returns a new tensor."""
        if mask.shape != tokens.shape[:2]:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match the tokens "
                             f"{tuple(tokens.shape[:2])}")
        return tokens.masked_fill(mask[..., None], 0.0)

    def masked_prediction(self, flux, mask=None, *, generator=None):
        """Mask, predict, and score a flux batch.

        Parameters
        ----------
        flux : `torch.Tensor`
            (B, n_pixels) flux on the grid.
        mask : `torch.Tensor`, optional
            Bool (B, n_tokens); drawn with `random_mask` when omitted.
        generator : `torch.Generator`, optional
            For the random mask.

        Returns
        -------
        dict
            ``tokens`` (targets), ``mask``, ``prediction`` (B, L, F) and
            ``loss`` (`masked_mse`).
        """
        tokens = self.tokenize(flux)
        if mask is None:
            mask = self.random_mask(tokens.shape[0], generator=generator, device=tokens.device)
        prediction = self.predict_tokens(self.mask_tokens(tokens, mask))
        return dict(tokens=tokens, mask=mask, prediction=prediction,
                    loss=masked_mse(prediction, tokens, mask))

    @torch.inference_mode()
    def reconstruct(self, flux, mask):
        """Predicted flux where ``mask`` hides tokens, for figures.

        Returns
        -------
        prediction : `torch.Tensor`
            (B, n_pixels) predicted flux in the input unit (overlap-averaged
            tokens, NaN on pixels no token covers).
        hidden : `torch.Tensor`
            Bool (B, n_pixels), True on pixels that were zeroed in every token
            covering them.
        """
        tokens = self.tokenize(flux)
        _, mu, sigma = self.standardize(flux.float())
        pred = self.predict_tokens(self.mask_tokens(tokens, mask))
        visible = (~mask).to(tokens.dtype)[..., None].expand(-1, -1, self.token_features)
        seen = self.untokenize(visible.contiguous()) > 0
        return self.untokenize(pred, mu, sigma), ~seen

    def num_parameters(self):
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())


class SpectrumEmbedder(nn.Module):
    """Spectrum encoder followed by the cross-attention pooling head.

    Parameters
    ----------
    backbone : dict
        `SpectrumEncoder` keyword arguments (e.g. a spectrum preset).
    pooling : dict
        `~astroclip.models.heads.CrossAttentionHead` keyword arguments
        except ``input_dim`` (the backbone width), e.g.
        ``dict(embed_dim=128, num_heads=4)``.

    Examples
    --------
    >>> import torch
    >>> from astroclip.models.spectrum import SpectrumEmbedder
    >>> m = SpectrumEmbedder(backbone=dict(embed_dim=16, num_layers=1, num_heads=2),
    ...                      pooling=dict(embed_dim=8, num_heads=4)).eval()
    >>> z, w = m(torch.rand(3, 7781), return_weights=True)
    >>> z.shape, w.shape
    (torch.Size([3, 8]), torch.Size([3, 4, 778]))
    """

    #: Model family written in ``config.json`` (`astroclip.models.weights.save_model`).
    family = "spectrum"

    def __init__(self, *, backbone, pooling):
        super().__init__()
        self.backbone = SpectrumEncoder(**backbone)
        pooling = dict(pooling)
        pooling.setdefault("input_dim", self.backbone.embed_dim)
        self.pooling = CrossAttentionHead(**pooling)
        self.config = dict(backbone=dict(self.backbone.config), pooling=dict(self.pooling.config))

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def forward(self, flux, *, return_weights=False):
        """Flux (B, n_pixels) -> embedding (B, d) (and attention weights (B, heads, L))."""
        return self.pooling(self.backbone(flux), return_weights=return_weights)

    def encode_spectrum(self, flux):
        """Flux (B, n_pixels) -> embeddings (B, d) of the pooling head."""
        return self(flux)

    def attention_maps(self, flux):
        """Per-head attention of the pooling query over the tokens, (B, heads, n_tokens)."""
        return self(flux, return_weights=True)[1]
