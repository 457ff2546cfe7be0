"""The shared pre-LayerNorm transformer block.

One block is ``x = x + attention(layernorm1(x)); x = x + mlp(layernorm2(x))``
(GPT-2 style, as in the released SpecFormer).  The sub-module
names match the released SpecFormer checkpoint so that its state dict loads
without renaming:

- ``layernorm1``, ``layernorm2``: `torch.nn.LayerNorm` (eps 1e-5, with bias);
- ``attention.attention``: one fused Linear(d -> 3d) producing q, k, v in that
  order, heads being contiguous ``d / n_heads`` wide slices of each;
- ``attention.projection``: Linear(d -> d) after the heads are concatenated;
- ``mlp.encoder``, ``mlp.decoder``: Linear(d -> r d) and Linear(r d -> d) with a
  GELU (exact, erf form) in between.

Attention goes through `torch.nn.functional.scaled_dot_product_attention`, so
the fastest kernel available on the device is used (flash / memory-efficient
attention on GPUs).  Nothing here is specific to spectra: any token sequence
``(B, L, d)`` works.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SelfAttention", "FeedForward", "TransformerBlock"]


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection.

    Parameters
    ----------
    embed_dim : int
        Token width ``d``; must be divisible by ``num_heads``.
    num_heads : int
        Number of attention heads.
    bias : bool, optional
        Biases on both linear layers.
    dropout : float, optional
        Dropout on the attention weights and on the output (training only).
    causal : bool, optional
        Causal (autoregressive) masking.

    Examples
    --------
    >>> import torch
    >>> from astroclip.models.transformer import SelfAttention
    >>> attn = SelfAttention(16, 4)
    >>> attn(torch.zeros(2, 5, 16)).shape
    torch.Size([2, 5, 16])
    """

    def __init__(self, embed_dim, num_heads, *, bias=True, dropout=0.0, causal=False):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}; "
                             "choose a width that is a multiple of the number of heads")
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.head_dim = self.embed_dim // self.num_heads
        self.dropout = float(dropout)
        self.causal = bool(causal)
        self.attention = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.projection = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.residual_dropout = nn.Dropout(dropout)

    def _heads(self, x):
        b, n, _ = x.shape
        q, k, v = self.attention(x).split(self.embed_dim, dim=2)
        shape = (b, n, self.num_heads, self.head_dim)
        return tuple(t.view(shape).transpose(1, 2) for t in (q, k, v))

    def forward(self, x, *, attn_mask=None, need_weights=False):
        """Attend over the tokens of ``x``.

        Parameters
        ----------
        x : `torch.Tensor`
            Tokens, shape (B, L, d).
        attn_mask : `torch.Tensor`, optional
            Boolean (True = may attend) or additive float mask broadcastable
            to (B, heads, L, L).
        need_weights : bool, optional
            Also return the attention weights (B, heads, L, L).  This path
            computes the softmax explicitly (slower, for diagnostics).

        Returns
        -------
        `torch.Tensor` or (`torch.Tensor`, `torch.Tensor`)
        """
        b, n, d = x.shape
        q, k, v = self._heads(x)
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if self.causal:
                causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
                scores = scores.masked_fill(~causal, float("-inf"))
            if attn_mask is not None:
                if attn_mask.dtype == torch.bool:
                    scores = scores.masked_fill(~attn_mask, float("-inf"))
                else:
                    scores = scores + attn_mask
            weights = scores.softmax(dim=-1)
            y = F.dropout(weights, p=p, training=self.training) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p,
                                               is_causal=self.causal and attn_mask is None)
        y = y.transpose(1, 2).reshape(b, n, d)
        y = self.residual_dropout(self.projection(y))
        return (y, weights) if need_weights else y


class FeedForward(nn.Module):
    """Two-layer perceptron ``decoder(gelu(encoder(x)))`` followed by dropout.

    Parameters
    ----------
    in_features : int
        Input (and, by default, output) width.
    hidden_features : int
        Width of the hidden layer.
    out_features : int, optional
        Output width; defaults to ``in_features``.
    bias : bool, optional
        Biases on both layers.
    dropout : float, optional
        Dropout on the output.

    Examples
    --------
    >>> import torch
    >>> from astroclip.models.transformer import FeedForward
    >>> FeedForward(8, 32)(torch.zeros(3, 8)).shape
    torch.Size([3, 8])
    """

    def __init__(self, in_features, hidden_features, out_features=None, *, bias=True, dropout=0.0):
        super().__init__()
        out_features = in_features if out_features is None else out_features
        self.encoder = nn.Linear(in_features, hidden_features, bias=bias)
        self.activation = nn.GELU()
        self.decoder = nn.Linear(hidden_features, out_features, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.decoder(self.activation(self.encoder(x))))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm transformer block (self-attention then MLP, both residual).

    Parameters
    ----------
    embed_dim : int
        Token width ``d``.
    num_heads : int
        Number of attention heads.
    mlp_ratio : float, optional
        Hidden width of the MLP in units of ``d`` (4 gives d -> 4d -> d).
    bias : bool, optional
        Biases in every linear and LayerNorm layer.
    dropout : float, optional
        Dropout on attention weights and residual branches (training only).
    layernorm_eps : float, optional
        LayerNorm epsilon.
    causal : bool, optional
        Causal attention.

    Examples
    --------
    >>> import torch
    >>> from astroclip.models.transformer import TransformerBlock
    >>> block = TransformerBlock(32, 4)
    >>> block(torch.zeros(2, 7, 32)).shape
    torch.Size([2, 7, 32])
    >>> sorted(n for n, _ in block.named_parameters())[:4]
    ['attention.attention.bias', 'attention.attention.weight', 'attention.projection.bias', 'attention.projection.weight']
    """

    def __init__(self, embed_dim, num_heads, *, mlp_ratio=4.0, bias=True, dropout=0.0,
                 layernorm_eps=1e-5, causal=False):
        super().__init__()
        hidden = int(round(mlp_ratio * embed_dim))
        self.layernorm1 = nn.LayerNorm(embed_dim, eps=layernorm_eps, bias=bias)
        self.attention = SelfAttention(embed_dim, num_heads, bias=bias, dropout=dropout,
                                       causal=causal)
        self.layernorm2 = nn.LayerNorm(embed_dim, eps=layernorm_eps, bias=bias)
        self.mlp = FeedForward(embed_dim, hidden, bias=bias, dropout=dropout)

    def forward(self, x, *, attn_mask=None, need_weights=False):
        """Apply the block to tokens ``x`` of shape (B, L, d).

        With ``need_weights=True`` returns ``(x, weights)`` where ``weights``
        are the self-attention weights (B, heads, L, L).
        """
        if need_weights:
            a, weights = self.attention(self.layernorm1(x), attn_mask=attn_mask, need_weights=True)
        else:
            a = self.attention(self.layernorm1(x), attn_mask=attn_mask)
        x = x + a
        x = x + self.mlp(self.layernorm2(x))
        return (x, weights) if need_weights else x
