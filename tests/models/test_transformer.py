import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from astroclip.models.transformer import FeedForward, SelfAttention, TransformerBlock


def _manual_attention(x, weight, bias, proj_w, proj_b, heads, causal=False):
    """Multi-head attention written out with explicit loops over heads."""
    b, n, d = x.shape
    hd = d // heads
    qkv = x @ weight.T + bias
    q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
    outs = []
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        s = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(hd)
        if causal:
            s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
        outs.append(s.softmax(-1) @ v[..., sl])
    return torch.cat(outs, -1) @ proj_w.T + proj_b


def test_block_parameter_names_match_released_layout():
    block = TransformerBlock(24, 3)
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert shapes == {
        "layernorm1.weight": (24,), "layernorm1.bias": (24,),
        "attention.attention.weight": (72, 24), "attention.attention.bias": (72,),
        "attention.projection.weight": (24, 24), "attention.projection.bias": (24,),
        "layernorm2.weight": (24,), "layernorm2.bias": (24,),
        "mlp.encoder.weight": (96, 24), "mlp.encoder.bias": (96,),
        "mlp.decoder.weight": (24, 96), "mlp.decoder.bias": (24,),
    }


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_manual_heads(causal):
    attn = SelfAttention(24, 4, causal=causal).eval()
    x = torch.randn(3, 7, 24)
    ref = _manual_attention(x, attn.attention.weight, attn.attention.bias,
                            attn.projection.weight, attn.projection.bias, 4, causal=causal)
    out = attn(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    out2, w = attn(x, need_weights=True)
    torch.testing.assert_close(out2, ref, atol=1e-5, rtol=1e-5)
    assert w.shape == (3, 4, 7, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 7))
    if causal:
        assert float(w[..., 0, 1:].detach().abs().max()) == 0.0


def test_attention_equals_torch_multihead_with_packed_weights():
    attn = SelfAttention(32, 4).eval()
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.attention.weight)
        mha.in_proj_bias.copy_(attn.attention.bias)
        mha.out_proj.weight.copy_(attn.projection.weight)
        mha.out_proj.bias.copy_(attn.projection.bias)
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(attn(x), mha(x, x, x, need_weights=False)[0], atol=1e-5, rtol=1e-5)


def test_block_is_pre_layernorm_residual():
    block = TransformerBlock(16, 2).eval()
    x = torch.randn(2, 5, 16)
    a = x + block.attention(F.layer_norm(x, (16,), block.layernorm1.weight, block.layernorm1.bias))
    h = F.layer_norm(a, (16,), block.layernorm2.weight, block.layernorm2.bias)
    mlp = F.gelu(h @ block.mlp.encoder.weight.T + block.mlp.encoder.bias)
    ref = a + mlp @ block.mlp.decoder.weight.T + block.mlp.decoder.bias
    torch.testing.assert_close(block(x), ref, atol=1e-5, rtol=1e-5)
    y, w = block(x, need_weights=True)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    assert w.shape == (2, 2, 5, 5)


def test_attention_mask_and_dropout_modes():
    attn = SelfAttention(8, 2, dropout=0.5)
    x = torch.randn(1, 4, 8)
    allowed = torch.ones(4, 4, dtype=torch.bool)
    allowed[:, 3] = False
    attn.eval()
    _, w = attn(x, attn_mask=allowed, need_weights=True)
    assert float(w[..., 3].detach().abs().max()) == 0.0
    torch.testing.assert_close(attn(x, attn_mask=allowed), attn(x, attn_mask=allowed,
                                                                 need_weights=True)[0])
    attn.train()
    torch.manual_seed(0)
    a = attn(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, attn(x))  # dropout active in training


def test_bad_sizes():
    with pytest.raises(ValueError, match="divisible"):
        SelfAttention(10, 3)
    assert FeedForward(4, 8, 2)(torch.zeros(3, 4)).shape == (3, 2)
