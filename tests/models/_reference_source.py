"""Source of a throw-away module holding reference-layout models, for test_released.py.

The tests write ``SOURCE`` to a temporary file, import it, build and save the
checkpoints the way the public reference code's training does
(PolymathicAI/AstroCLIP: ``AstroClipModel`` with its encoder modules as
Lightning hyper-parameters; ``SpecFormer`` as a LightningModule; the DINOv2
trainer's teacher dict), then delete the module and the file, so that the
classes the checkpoints pickle cannot be imported when they are read.

The classes use the reference's attribute names (hence the state-dict names of
the released files) and compute the reference's forward passes, written here
from the published description of the method: attention with an explicit
softmax, token windows by slicing, the colour mapping left to the caller.
"""

SOURCE = '''
import math

import lightning as L
import numpy as np
import torch
from torch import nn


def attend(q, k, v, heads):
    b, t, c = q.shape
    s = k.shape[1]
    q = q.view(b, t, heads, c // heads).transpose(1, 2)
    k = k.view(b, s, heads, c // heads).transpose(1, 2)
    v = v.view(b, s, heads, c // heads).transpose(1, 2)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // heads), dim=-1)
    return (w @ v).transpose(1, 2).reshape(b, t, c)


# ------------------------------------------------------------------ SpecFormer
class MLP(nn.Module):
    def __init__(self, in_features, hidden_features, dropout=0.0):
        super().__init__()
        self.encoder = nn.Linear(in_features, hidden_features)
        self.activation = nn.GELU()
        self.decoder = nn.Linear(hidden_features, in_features)
        self.dropout_layer = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x):
        x = self.decoder(self.activation(self.encoder(x)))
        return x if self.dropout_layer is None else self.dropout_layer(x)


class SelfAttention(nn.Module):
    def __init__(self, embedding_dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.attention = nn.Linear(embedding_dim, 3 * embedding_dim)
        self.projection = nn.Linear(embedding_dim, embedding_dim)

    def forward(self, x):
        q, k, v = self.attention(x).split(x.shape[-1], dim=2)
        return self.projection(attend(q, k, v, self.num_heads))


class TransformerBlock(nn.Module):
    def __init__(self, embedding_dim, num_heads):
        super().__init__()
        self.layernorm1 = nn.LayerNorm(embedding_dim)
        self.attention = SelfAttention(embedding_dim, num_heads)
        self.layernorm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLP(embedding_dim, 4 * embedding_dim)

    def forward(self, x):
        x = x + self.attention(self.layernorm1(x))
        return x + self.mlp(self.layernorm2(x))


class SpecFormer(L.LightningModule):
    def __init__(self, input_dim=22, embed_dim=768, num_layers=6, num_heads=6, max_len=800,
                 mask_num_chunks=6, mask_chunk_width=50, slice_section_length=20,
                 slice_overlap=10, dropout=0.1, norm_first=False):
        super().__init__()
        self.save_hyperparameters()
        self.data_embed = nn.Linear(input_dim, embed_dim)
        self.position_embed = nn.Embedding(max_len, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(embed_dim, num_heads)
                                    for _ in range(num_layers))
        self.final_layernorm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, input_dim)

    def preprocess(self, flux):
        mu = flux.mean(1, keepdim=True)
        sigma = flux.std(1, keepdim=True).clamp(min=0.2)
        x = (flux - mu) / sigma
        w = self.hparams.slice_section_length
        step = w - self.hparams.slice_overlap
        windows = [x[:, s:s + w] for s in range(0, x.shape[1] - w + 1, step)]
        tokens = torch.zeros(x.shape[0], len(windows) + 1, w + 2)
        tokens[:, 0, 0] = ((mu - 2) / 2)[:, 0]
        tokens[:, 0, 1] = ((sigma - 2) / 8)[:, 0]
        for j, win in enumerate(windows):
            tokens[:, j + 1, 2:] = win
        return tokens

    def forward(self, flux):
        x = self.preprocess(flux)
        pos = torch.arange(x.shape[1])
        x = self.dropout(self.data_embed(x) + self.position_embed(pos))
        for block in self.blocks:
            x = block(x)
        x = self.final_layernorm(x)
        return {"reconstructions": self.head(x), "embedding": x}


# ------------------------------------------------------------------ pooling heads
class CrossAttentionHead(nn.Module):
    def __init__(self, embed_dim, n_head, model_embed_dim, dropout):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, embed_dim))
        self.multihead_attn = nn.MultiheadAttention(embed_dim, n_head, batch_first=True,
                                                    kdim=model_embed_dim, vdim=model_embed_dim)
        self.layernorm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        out, weights = self.multihead_attn(self.query.repeat(x.shape[0], 1, 1), x, x,
                                           average_attn_weights=False)
        return self.layernorm(self.dropout(out)), weights


class SpectrumHead(nn.Module):
    def __init__(self, backbone_hparams, embed_dim, n_head=4, model_embed_dim=768, dropout=0.1):
        super().__init__()
        self.backbone = SpecFormer(**backbone_hparams)
        self.cross_attention = CrossAttentionHead(embed_dim, n_head, model_embed_dim, dropout)
        self.mlp = MLP(embed_dim, 4 * embed_dim, dropout=dropout)

    def forward(self, flux):
        x, _ = self.cross_attention(self.backbone(flux)["embedding"])
        return (x + self.mlp(x))[:, 0]          # residual on the spectrum side


# ------------------------------------------------------------------ DINOv2 ViT
class PatchEmbed(nn.Module):
    def __init__(self, patch_size, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).split(x.shape[-1], dim=2)
        return self.proj(attend(q, k, v, self.num_heads))


class LayerScale(nn.Module):
    def __init__(self, dim, init_values=1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class NestedTensorBlock(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class BlockChunk(nn.ModuleList):
    def forward(self, x):
        for block in self:
            x = block(x)
        return x


class DinoVisionTransformer(nn.Module):
    def __init__(self, img_size, patch_size, embed_dim, depth, num_heads, block_chunks):
        super().__init__()
        n = (img_size // patch_size) ** 2
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        blocks = [NestedTensorBlock(embed_dim, num_heads) for _ in range(depth)]
        size = depth // block_chunks
        self.blocks = nn.ModuleList(BlockChunk([nn.Identity()] * i + blocks[i:i + size])
                                    for i in range(0, depth, size))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Identity()

    def run_blocks(self, x):
        for chunk in self.blocks:
            x = chunk(x)
        return self.norm(x)

    def forward(self, images):
        """DINOv2's embedding: the normalised class token."""
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.run_blocks(x)[:, 0])


class WeightNormLinear(nn.Module):
    """The names of a weight-normed Linear (``weight_g``, ``weight_v``)."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out_features, 1))
        self.weight_v = nn.Parameter(torch.randn(out_features, in_features))


class DINOHead(nn.Module):
    def __init__(self, in_dim, hidden_dim, bottleneck_dim, out_dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, bottleneck_dim))
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)


class ImageHead(nn.Module):
    def __init__(self, vit, embed_dim, n_head=4, model_embed_dim=1024, dropout=0.1):
        super().__init__()
        self.backbone = vit
        self.cross_attention = CrossAttentionHead(embed_dim, n_head, model_embed_dim, dropout)
        self.mlp = MLP(embed_dim, 4 * embed_dim, dropout=dropout)

    def forward(self, rgb):
        tokens = self.backbone.run_blocks(self.backbone.patch_embed(rgb))  # no cls, no pos
        x, _ = self.cross_attention(tokens)
        return self.mlp(x)[:, 0]                 # no residual on the image side


# ------------------------------------------------------------------ the aligned model
class AstroClipModel(L.LightningModule):
    def __init__(self, image_encoder, spectrum_encoder, temperature=15.5, lr=1e-4,
                 weight_decay=0.05, epochs=100, eta_min=5e-7, logit_scale=15.5,
                 learnable_logit_scale=False):
        super().__init__()
        self.save_hyperparameters()
        self.image_encoder = image_encoder
        self.spectrum_encoder = spectrum_encoder
        self.logit_scale = np.log(logit_scale)
'''
