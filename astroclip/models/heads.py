"""Heads on top of the backbones: the cross-attention pooling head and a small MLP.

`CrossAttentionHead` is the pooling block of the aligned model
(the AstroCLIP paper, section 3.2, and the released code): a learned query
(1 x 1 x d) attends over the backbone's output tokens (keys and values of
width ``input_dim``) with `torch.nn.MultiheadAttention`, followed by dropout,
LayerNorm(d) and an MLP d -> 4d -> d with GELU (optionally residual).  Its
sub-module names are those of the released checkpoint (``query``,
``multihead_attn``, ``layernorm``, ``mlp.encoder``, ``mlp.decoder``), so that
`torch.nn.MultiheadAttention` stores separate ``q_proj_weight`` /
``k_proj_weight`` / ``v_proj_weight`` when ``input_dim != embed_dim`` and a
packed ``in_proj_weight`` when they are equal, exactly as released.

`MLP` is the small regression head of the few-shot evaluation (hidden
layers, ReLU, dropout).
"""

import torch
from torch import nn

from .transformer import FeedForward

__all__ = ["CrossAttentionHead", "MLP"]


class CrossAttentionHead(nn.Module):
    """Pool a token sequence into one vector with a learned-query cross-attention.

    Parameters
    ----------
    embed_dim : int
        Output width ``d`` (128 in the paper, 1024 released).
    input_dim : int
        Width of the tokens attended over (keys and values), e.g. 768.
    num_heads : int, optional
        Attention heads (4 in the paper).
    dropout : float, optional
        Dropout inside the attention, after it and at the MLP output.
    mlp_ratio : int, optional
        Hidden width of the MLP in units of ``d``.
    residual : bool, optional
        ``x + mlp(x)`` instead of ``mlp(x)`` (the released spectrum side uses
        the residual, the released image side does not).
    layernorm_eps : float, optional
        LayerNorm epsilon.

    Examples
    --------
    >>> import torch
    >>> from astroclip.models.heads import CrossAttentionHead
    >>> head = CrossAttentionHead(16, 24, num_heads=4)
    >>> z, w = head(torch.randn(2, 10, 24), return_weights=True)
    >>> z.shape, w.shape
    (torch.Size([2, 16]), torch.Size([2, 4, 10]))
    >>> bool(torch.allclose(w.sum(-1), torch.ones(2, 4)))
    True
    """

    #: Model family written in ``config.json`` (`astroclip.models.weights.save_model`).
    family = "head"

    def __init__(self, embed_dim, input_dim, *, num_heads=4, dropout=0.0, mlp_ratio=4,
                 residual=False, layernorm_eps=1e-5):
        super().__init__()
        self.config = dict(embed_dim=int(embed_dim), input_dim=int(input_dim),
                           num_heads=int(num_heads), dropout=float(dropout),
                           mlp_ratio=int(mlp_ratio), residual=bool(residual),
                           layernorm_eps=float(layernorm_eps))
        self.embed_dim = int(embed_dim)
        self.input_dim = int(input_dim)
        self.residual = bool(residual)
        self.query = nn.Parameter(torch.randn(1, 1, embed_dim))
        self.multihead_attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout,
                                                    kdim=input_dim, vdim=input_dim,
                                                    batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.layernorm = nn.LayerNorm(embed_dim, eps=layernorm_eps)
        self.mlp = FeedForward(embed_dim, mlp_ratio * embed_dim, embed_dim, dropout=dropout)

    def forward(self, x, *, key_padding_mask=None, return_weights=False):
        """Pool tokens ``x`` (B, L, input_dim) into (B, embed_dim).

        Parameters
        ----------
        x : `torch.Tensor`
            Backbone output tokens, shape (B, L, input_dim).
        key_padding_mask : `torch.Tensor`, optional
            Boolean (B, L), True where a token must be ignored.
        return_weights : bool, optional
            Also return the attention weights of each head, shape
            (B, num_heads, L), each row summing to 1 (the paper's attention
            maps).

        Returns
        -------
        `torch.Tensor` or (`torch.Tensor`, `torch.Tensor`)
        """
        if x.ndim != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"expected tokens of shape (batch, length, {self.input_dim}), "
                             f"got {tuple(x.shape)}")
        query = self.query.expand(x.shape[0], -1, -1)
        out, weights = self.multihead_attn(query, x, x, key_padding_mask=key_padding_mask,
                                           need_weights=return_weights,
                                           average_attn_weights=False)
        z = self.layernorm(self.dropout(out))
        z = z + self.mlp(z) if self.residual else self.mlp(z)
        z = z[:, 0]
        if return_weights:
            return z, weights[:, :, 0]
        return z


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """A small multi-layer perceptron (the few-shot regression head).

    Parameters
    ----------
    in_features : int
        Input width.
    hidden_features : sequence of int, optional
        Widths of the hidden layers (released code: ``(64, 64)``).
    out_features : int, optional
        Output width.
    activation : {"relu", "gelu", "silu", "tanh"}, optional
        Non-linearity after each hidden layer.
    dropout : float, optional
        Dropout after each hidden activation.

    Examples
    --------
    >>> import torch
    >>> from astroclip.models.heads import MLP
    >>> MLP(128, (64, 64), 2)(torch.zeros(5, 128)).shape
    torch.Size([5, 2])
    """

    #: Model family written in ``config.json`` (`astroclip.models.weights.save_model`).
    family = "head"

    def __init__(self, in_features, hidden_features=(64, 64), out_features=1, *,
                 activation="relu", dropout=0.1):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of "
                             f"{sorted(_ACTIVATIONS)}")
        hidden_features = [int(h) for h in hidden_features]
        self.config = dict(in_features=int(in_features), hidden_features=hidden_features,
                           out_features=int(out_features), activation=activation,
                           dropout=float(dropout))
        layers = []
        width = int(in_features)
        for h in hidden_features:
            layers += [nn.Linear(width, h), _ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, int(out_features)))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)
