"""Image backbones: state-dict layouts of torchvision / MoCo v2 / DINOv2, numerics, encoder."""

import numpy as np
import pytest
import torch
from torch import nn

from astroclip.inputs import grid
from astroclip.models.image import (ImageEncoder, ResNet, VisionTransformer,
                                    extract_backbone_state_dict, load_backbone_weights,
                                    resnet50)


# ---------------------------------------------------------------- reference layouts
def torchvision_resnet50_layout(num_classes=1000, mlp_hidden=None):
    """Names and shapes of torchvision's resnet50 state dict, written from its definition."""
    out = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix, c):
        out.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,),
                    f"{prefix}.running_mean": (c,), f"{prefix}.running_var": (c,),
                    f"{prefix}.num_batches_tracked": ()})

    bn("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            out[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            bn(f"{p}.bn1", planes)
            out[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            out[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                out[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    if mlp_hidden is None:
        out.update({"fc.weight": (num_classes, 2048), "fc.bias": (num_classes,)})
    else:
        out.update({"fc.0.weight": (mlp_hidden, 2048), "fc.0.bias": (mlp_hidden,),
                    "fc.2.weight": (num_classes, mlp_hidden), "fc.2.bias": (num_classes,)})
    return out


def dinov2_layout(*, embed_dim, depth, chunks, patch=12, img=144, in_chans=3, mlp_ratio=4):
    """Names and shapes of a DINOv2 ViT state dict (DinoVisionTransformer, layer scale on)."""
    n = (img // patch) ** 2
    d, h = embed_dim, int(embed_dim * mlp_ratio)
    out = {"cls_token": (1, 1, d), "pos_embed": (1, n + 1, d), "mask_token": (1, d),
           "patch_embed.proj.weight": (d, in_chans, patch, patch), "patch_embed.proj.bias": (d,),
           "norm.weight": (d,), "norm.bias": (d,)}
    size = depth // chunks if chunks else depth
    for i in range(depth):
        p = f"blocks.{i // size}.{i}" if chunks else f"blocks.{i}"
        out.update({f"{p}.norm1.weight": (d,), f"{p}.norm1.bias": (d,),
                    f"{p}.attn.qkv.weight": (3 * d, d), f"{p}.attn.qkv.bias": (3 * d,),
                    f"{p}.attn.proj.weight": (d, d), f"{p}.attn.proj.bias": (d,),
                    f"{p}.ls1.gamma": (d,), f"{p}.norm2.weight": (d,), f"{p}.norm2.bias": (d,),
                    f"{p}.mlp.fc1.weight": (h, d), f"{p}.mlp.fc1.bias": (h,),
                    f"{p}.mlp.fc2.weight": (d, h), f"{p}.mlp.fc2.bias": (d,),
                    f"{p}.ls2.gamma": (d,)})
    return out


def random_state(layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[k] = torch.randn(shape, generator=g) * 0.02
    return sd


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------ ResNet
def test_resnet50_matches_torchvision_layout():
    with torch.device("meta"):
        net = resnet50()
    assert shapes(net) == torchvision_resnet50_layout()
    # torchvision's resnet50 has 25,557,032 parameters
    assert sum(p.numel() for p in net.parameters()) == 25_557_032


def test_torchvision_state_dict_loads_without_missing_keys(tmp_path):
    sd = random_state(torchvision_resnet50_layout())
    path = tmp_path / "resnet50.pth"
    torch.save(sd, path)
    net = load_backbone_weights(resnet50(), path)
    got = net.state_dict()
    assert set(got) == set(sd)
    for k in ("conv1.weight", "layer3.5.bn2.running_var", "layer4.0.downsample.0.weight",
              "fc.bias"):
        assert torch.equal(got[k], sd[k]), k
    assert int(got["bn1.num_batches_tracked"]) == 7


def test_moco_v2_checkpoint_loads(tmp_path):
    q = random_state(torchvision_resnet50_layout(num_classes=128, mlp_hidden=2048), seed=1)
    state = {f"module.encoder_q.{k}": v for k, v in q.items()}
    state.update({f"module.encoder_k.{k}": v + 1 for k, v in q.items() if v.is_floating_point()})
    state["module.queue"] = torch.randn(128, 64)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    path = tmp_path / "checkpoint_0199.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet50", "state_dict": state}, path)

    net = load_backbone_weights(resnet50(num_classes=128, mlp_hidden=2048), path)
    assert torch.equal(net.fc[2].weight, q["fc.2.weight"])
    assert torch.equal(net.layer2[1].conv2.weight,
                       q["layer2.1.conv2.weight"])
    # the query encoder, not the momentum encoder
    assert torch.equal(net.conv1.weight, q["conv1.weight"])

    # a classifier-headed model refuses the projection head, with the fix in the message
    with pytest.raises(ValueError, match="mlp_hidden=2048"):
        load_backbone_weights(resnet50(), path)
    # ... or ignores it on request
    net2 = load_backbone_weights(resnet50(num_classes=10), path, include_head=False)
    assert torch.equal(net2.conv1.weight, q["conv1.weight"])


def test_resnet_forward_and_small_preset_shapes():
    net = ResNet(layers=(1, 1, 1, 1), width=8, num_classes=5, mlp_hidden=12)
    y = net(torch.randn(3, 3, 96, 96))
    assert y.shape == (3, 5)
    assert net.forward_features(torch.randn(3, 3, 96, 96)).shape == (3, 256)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.randn(3, 4, 96, 96))
    with pytest.raises(ValueError, match="4 positive"):
        ResNet(layers=(1, 1, 1))


def test_bottleneck_matches_functional_reference():
    net = ResNet(layers=(1, 1, 1, 1), width=4, num_classes=None).eval()
    blk = net.layer2[0]
    for m in blk.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 16, 12, 12)

    def bn(m, t):
        return torch.nn.functional.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias,
                                              False, 0.0, m.eps)

    conv = torch.nn.functional.conv2d
    out = torch.relu(bn(blk.bn1, conv(x, blk.conv1.weight)))
    out = torch.relu(bn(blk.bn2, conv(out, blk.conv2.weight, stride=2, padding=1)))
    out = bn(blk.bn3, conv(out, blk.conv3.weight))
    ident = bn(blk.downsample[1], conv(x, blk.downsample[0].weight, stride=2))
    ref = torch.relu(out + ident)
    with torch.no_grad():
        assert torch.allclose(blk(x), ref, atol=1e-5)


# --------------------------------------------------------------------------- ViT
def test_released_vit_matches_dinov2_layout():
    with torch.device("meta"):
        vit = VisionTransformer(img_size=144, patch_size=12, embed_dim=1024, depth=24,
                                num_heads=16, block_chunks=4)
    assert shapes(vit) == dinov2_layout(embed_dim=1024, depth=24, chunks=4)
    assert sum(p.numel() for p in vit.parameters()) == pytest.approx(303.3e6, rel=0.01)


@pytest.mark.parametrize("chunks", [0, 2])
def test_dinov2_state_dict_loads_without_missing_keys(tmp_path, chunks):
    layout = dinov2_layout(embed_dim=32, depth=4, chunks=chunks, img=48)
    sd = random_state(layout, seed=3)
    # a DINOv2 training checkpoint: teacher weights under backbone., plus the DINO head
    ckpt = {"teacher": {**{f"backbone.{k}": v for k, v in sd.items()},
                        "dino_head.mlp.0.weight": torch.zeros(4, 32)}}
    path = tmp_path / "teacher_checkpoint.pth"
    torch.save(ckpt, path)
    vit = VisionTransformer(img_size=48, embed_dim=32, depth=4, num_heads=4, block_chunks=chunks)
    load_backbone_weights(vit, path)
    got = vit.state_dict()
    assert set(got) == set(sd)
    assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_vit_attention_is_standard_multihead_attention():
    vit = VisionTransformer(img_size=24, embed_dim=16, depth=1, num_heads=4)
    attn = vit.blocks[0].attn
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
    x = torch.randn(3, 7, 16)
    with torch.no_grad():
        assert torch.allclose(attn(x), mha(x, x, x, need_weights=False)[0], atol=1e-5)


def test_vit_paths():
    vit = VisionTransformer(img_size=48, embed_dim=32, depth=2, num_heads=4, block_chunks=2)
    x = torch.randn(2, 3, 48, 48)
    tokens = vit.forward_patch_tokens(x)
    assert tokens.shape == (2, 16, 32)
    # the patch-token path uses neither the class token nor the position embedding
    with torch.no_grad():
        vit.pos_embed.add_(5.0)
        vit.cls_token.add_(5.0)
    assert torch.allclose(vit.forward_patch_tokens(x), tokens)
    feats = vit.forward_features(x)
    assert feats["x_norm_clstoken"].shape == (2, 32)
    assert feats["x_norm_patchtokens"].shape == (2, 16, 32)
    assert not torch.allclose(feats["x_norm_patchtokens"], tokens)
    with pytest.raises(ValueError, match="48x48"):
        vit(torch.randn(2, 3, 40, 40))


def test_checkpoint_of_another_architecture_is_refused():
    vit_sd = random_state(dinov2_layout(embed_dim=32, depth=2, chunks=0, img=48))
    with pytest.raises(ValueError, match="another architecture"):
        load_backbone_weights(ResNet(layers=(1, 1, 1, 1), width=8, num_classes=4), vit_sd)
    small = ResNet(layers=(1, 1, 1, 1), width=8, num_classes=4).state_dict()
    with pytest.raises(ValueError, match="other shapes"):
        load_backbone_weights(ResNet(layers=(1, 1, 1, 1), width=16, num_classes=4), small)
    vit = VisionTransformer(img_size=48, embed_dim=32, depth=3, num_heads=4)
    with pytest.raises(ValueError, match="missing"):
        load_backbone_weights(vit, vit_sd)


def test_extract_prefixes():
    t = torch.zeros(1)
    assert list(extract_backbone_state_dict({"image_encoder.backbone.norm.weight": t,
                                             "spectrum_encoder.x": t})) == ["norm.weight"]
    assert list(extract_backbone_state_dict({"state_dict": {"module.conv1.weight": t}})) == [
        "conv1.weight"]


def test_color_map_preprocessing_matches_formula(rng):
    """The ViT encoder sees the Legacy Survey colour mapping of the centre crop."""
    enc = ImageEncoder(backbone="vit", embed_dim=8, input_mapping="color_map", crop_size=12,
                       backbone_kwargs=dict(img_size=12, embed_dim=8, depth=1, num_heads=2))
    img = rng.normal(0.05, 0.2, size=(2, 3, 16, 16)).astype(np.float32)
    img[0, :, 8, 8] = -1.0  # all-negative pixel: I == 0 branch
    out = enc.preprocess(torch.from_numpy(img)).numpy()
    crop = img[..., 2:14, 2:14]
    s = np.array([grid.COLOR_SCALES[b] for b in grid.BANDS]).reshape(1, 3, 1, 1)
    scaled = crop * s + grid.COLOR_M
    mean = np.maximum(scaled, 0).mean(axis=1, keepdims=True)
    mean[mean == 0] = 1e-6
    f = np.arcsinh(grid.COLOR_Q * mean) / np.sqrt(grid.COLOR_Q)
    chan = np.clip(scaled * f / mean, 0, 1)
    ref = np.empty_like(chan)
    for i, b in enumerate(grid.BANDS):
        ref[:, grid.COLOR_RGB_PLANE[b]] = chan[:, i]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert np.all(out[0, :, 6, 6] == 0)
    flux = ImageEncoder(backbone="resnet", embed_dim=8, crop_size=12,
                        backbone_kwargs=dict(layers=(1, 1, 1, 1), width=4))
    np.testing.assert_array_equal(flux.preprocess(torch.from_numpy(img)).numpy(), crop)


# ----------------------------------------------------------------------- encoder
def test_image_encoder_resnet_and_errors():
    enc = ImageEncoder(backbone="resnet", embed_dim=16,
                       backbone_kwargs=dict(layers=(1, 1, 1, 1), width=8, mlp_hidden=32))
    x = torch.rand(3, 3, 152, 152)
    z = enc(x)
    assert z.shape == (3, 16)
    # preprocessing is the centre crop: feeding the crop directly gives the same output
    enc.eval()
    assert torch.allclose(enc(x), enc(x[..., 28:124, 28:124]), atol=1e-6)
    with pytest.raises(ValueError, match="bands g,r,z"):
        enc(torch.rand(3, 4, 152, 152))
    with pytest.raises(ValueError, match="smaller than"):
        enc(torch.rand(3, 3, 64, 64))
    names = {n for n, _ in enc.named_parameters()}
    head = {id(p) for p in enc.head_parameters()}
    assert {n for n, p in enc.named_parameters() if id(p) in head} == {
        n for n in names if n.startswith("backbone.fc.")}


def test_image_encoder_vit_layout_and_weights():
    enc = ImageEncoder(backbone="vit", embed_dim=16, input_mapping="color_map", head_heads=4,
                       backbone_kwargs=dict(img_size=48, embed_dim=24, depth=2, num_heads=2))
    z, w = enc(torch.rand(2, 3, 152, 152) * 0.1, return_weights=True)
    assert z.shape == (2, 16) and w.shape == (2, 4, 16)
    names = set(enc.state_dict())
    assert "cross_attention.query" in names
    assert "cross_attention.multihead_attn.in_proj_weight" not in names  # kdim 24 != 16
    assert "cross_attention.multihead_attn.k_proj_weight" in names
    assert "backbone.blocks.1.ls2.gamma" in names
    with pytest.raises(ValueError, match="unknown image backbone"):
        ImageEncoder(backbone="vgg")
    with pytest.raises(ValueError, match="input_mapping"):
        ImageEncoder(input_mapping="rgb")


def test_image_encoder_class_token_embedding(tmp_path):
    """The AstroDINO embedding: the ViT's normalised class token, no head, deterministic."""
    from astroclip.exceptions import InputError
    from astroclip.models.clip import AstroCLIP
    from astroclip.models.factory import create_model as load_model
    from astroclip.models.weights import save_model

    kw = dict(img_size=48, embed_dim=24, depth=2, num_heads=2)
    enc = ImageEncoder(backbone="vit", embedding="class_token", input_mapping="color_map",
                       backbone_kwargs=kw).eval()
    assert enc.embed_dim == 24 and enc.cross_attention is None and enc.head_parameters() == []
    assert not any(k.startswith("cross_attention") for k in enc.state_dict())
    images = torch.rand(3, 3, 152, 152) * 0.1
    with torch.no_grad():
        z = enc.encode_image(images)
        cls = enc.backbone.forward_features(enc.preprocess(images))["x_norm_clstoken"]
    assert z.shape == (3, 24) and torch.equal(z, cls)
    again = load_model(save_model(enc, tmp_path / "dino"))
    assert again.embedding == "class_token"
    with torch.no_grad():
        assert torch.equal(again.encode_image(images), z)

    head = enc.with_head(embed_dim=16, head_heads=4)
    assert head.embedding == "head" and head.backbone is enc.backbone
    assert head.config["embed_dim"] == 16 and head(images).shape == (3, 16)
    assert head.with_head() is head
    # in an aligned model trained end to end, the class-token path keeps cls_token/pos_embed
    clip = AstroCLIP(image=enc.config, spectrum=dict(
        backbone=dict(embed_dim=16, num_layers=1, num_heads=2, window=40, stride=40),
        pooling=dict(embed_dim=24, num_heads=2)), freeze="none")
    assert clip.image_encoder.backbone.cls_token.requires_grad
    assert not clip.image_encoder.backbone.mask_token.requires_grad

    with pytest.raises(InputError, match="needs a ViT"):
        ImageEncoder(backbone="resnet", embedding="class_token")
    with pytest.raises(InputError, match="embed_dim=16 but a class-token embedding has the "
                                         "ViT's width 24"):
        ImageEncoder(backbone="vit", embedding="class_token", embed_dim=16, backbone_kwargs=kw)
    with pytest.raises(InputError, match="embedding='mean'"):
        ImageEncoder(backbone="vit", embedding="mean", backbone_kwargs=kw)
    with pytest.raises(InputError, match="no attention head"):
        enc(images, return_weights=True)
