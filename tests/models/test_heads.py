import math

import pytest
import torch
from torch.nn import functional as F

from astroclip.models.heads import MLP, CrossAttentionHead


def _reference(head, x):
    """Cross-attention head computed from its raw tensors (method.md section 2)."""
    sd = head.state_dict()
    d, heads = head.embed_dim, head.multihead_attn.num_heads
    hd = d // heads
    if "multihead_attn.in_proj_weight" in sd:
        wq, wk, wv = sd["multihead_attn.in_proj_weight"].split(d)
    else:
        wq, wk, wv = (sd[f"multihead_attn.{n}_proj_weight"] for n in "qkv")
    bq, bk, bv = sd["multihead_attn.in_proj_bias"].split(d)
    q = sd["query"][0] @ wq.T + bq                      # (1, d)
    k = x @ wk.T + bk                                   # (B, L, d)
    v = x @ wv.T + bv
    outs, maps = [], []
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        w = (q[:, sl] @ k[..., sl].transpose(1, 2) / math.sqrt(hd)).softmax(-1)  # (B, 1, L)
        maps.append(w[:, 0])
        outs.append(w @ v[..., sl])
    o = torch.cat(outs, -1) @ sd["multihead_attn.out_proj.weight"].T + sd["multihead_attn.out_proj.bias"]
    z = F.layer_norm(o, (d,), sd["layernorm.weight"], sd["layernorm.bias"])
    m = F.gelu(z @ sd["mlp.encoder.weight"].T + sd["mlp.encoder.bias"])
    m = m @ sd["mlp.decoder.weight"].T + sd["mlp.decoder.bias"]
    z = z + m if head.residual else m
    return z[:, 0], torch.stack(maps, 1)


@pytest.mark.parametrize("input_dim,residual", [(24, True), (16, False)])
def test_cross_attention_matches_reference(input_dim, residual):
    head = CrossAttentionHead(16, input_dim, num_heads=4, residual=residual).eval()
    x = torch.randn(3, 11, input_dim)
    z, w = head(x, return_weights=True)
    ref_z, ref_w = _reference(head, x)
    assert z.shape == (3, 16) and w.shape == (3, 4, 11)
    torch.testing.assert_close(z, ref_z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, ref_w, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(head(x), z)
    # heads are genuinely different maps, each a distribution over the tokens
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4))
    assert not torch.allclose(w[:, 0], w[:, 1])


def test_state_dict_names_follow_released_layout():
    separate = CrossAttentionHead(32, 24, num_heads=4).state_dict()
    assert separate["query"].shape == (1, 1, 32)
    assert separate["multihead_attn.q_proj_weight"].shape == (32, 32)
    assert separate["multihead_attn.k_proj_weight"].shape == (32, 24)
    assert separate["multihead_attn.v_proj_weight"].shape == (32, 24)
    assert separate["multihead_attn.in_proj_bias"].shape == (96,)
    assert "multihead_attn.in_proj_weight" not in separate
    assert {"layernorm.weight", "mlp.encoder.weight", "mlp.decoder.bias",
            "multihead_attn.out_proj.weight"} <= set(separate)
    assert separate["mlp.encoder.weight"].shape == (128, 32)
    packed = CrossAttentionHead(32, 32).state_dict()
    assert packed["multihead_attn.in_proj_weight"].shape == (96, 32)
    assert "multihead_attn.q_proj_weight" not in packed


def test_paper_head_size():
    head = CrossAttentionHead(128, 768, num_heads=4)
    n = sum(p.numel() for p in head.parameters())
    # query + attention (q 128x128, k/v 128x768, biases, out) + LayerNorm + MLP 128->512->128
    assert n == 128 + (128 * 128 + 2 * 128 * 768 + 3 * 128 + 128 * 128 + 128) + 256 + (
        128 * 512 + 512 + 512 * 128 + 128)


def test_padding_mask_and_bad_input():
    head = CrossAttentionHead(8, 8, num_heads=2).eval()
    x = torch.randn(2, 5, 8)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[:, -2:] = True
    _, w = head(x, key_padding_mask=pad, return_weights=True)
    assert float(w[..., -2:].detach().abs().max()) == 0.0
    with pytest.raises(ValueError, match=r"\(batch, length, 8\)"):
        head(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"\(batch, length, 8\)"):
        head(torch.randn(5, 8))


def test_mlp():
    mlp = MLP(10, (64, 64), 3, dropout=0.1)
    assert mlp(torch.randn(4, 10)).shape == (4, 3)
    assert [type(m).__name__ for m in mlp.layers] == [
        "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert MLP(5, (), 2)(torch.zeros(1, 5)).shape == (1, 2)
    with pytest.raises(ValueError, match="activation"):
        MLP(3, (4,), 1, activation="swish-ish")
