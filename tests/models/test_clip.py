"""The aligned model: InfoNCE loss, gathered negatives, freezing, retrieval, weights."""

import os
import socket

import numpy as np
import pytest
import torch

from astroclip.models import factory, weights
from astroclip.models.clip import AstroCLIP, clip_logits, clip_loss
from astroclip.models.convert import convert_astroclip


# tiny models: one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


TINY = dict(
    image=dict(backbone="resnet", embed_dim=16, crop_size=32,
               backbone_kwargs=dict(layers=(1, 1, 1, 1), width=4, mlp_hidden=32)),
    spectrum=dict(backbone=dict(embed_dim=16, num_layers=1, num_heads=2, window=40, stride=40),
                  pooling=dict(num_heads=2)),
)


def tiny(**kw):
    return AstroCLIP(**{**TINY, **kw})


def reference_loss(zi, zs, s, eps=1e-3):
    """Equation 1 of the paper, both directions, in numpy float64."""
    zi = zi / np.maximum(np.linalg.norm(zi, axis=1, keepdims=True), eps)
    zs = zs / np.maximum(np.linalg.norm(zs, axis=1, keepdims=True), eps)
    logits = s * zi @ zs.T
    total = 0.0
    for lg in (logits, logits.T):
        lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
        total += np.mean(lse - np.diag(lg))
    return total / 2


# ------------------------------------------------------------------------- loss
def test_loss_matches_equation_1(rng):
    zi, zs = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    for s in (1.0, 15.5):
        got = clip_loss(torch.tensor(zi), torch.tensor(zs), logit_scale=s)
        assert float(got) == pytest.approx(reference_loss(zi, zs, s), rel=1e-5)
    # invariant to the embeddings' norm, sensitive to the pairing
    t_i, t_s = torch.tensor(zi), torch.tensor(zs)
    ref = float(clip_loss(t_i, t_s))
    assert float(clip_loss(3 * t_i, 0.5 * t_s)) == pytest.approx(ref, rel=1e-5)
    assert float(clip_loss(t_i, t_i)) < float(clip_loss(t_i, t_i.roll(1, 0)))
    # logits: image rows, spectrum columns
    assert clip_logits(t_i[:3], t_s[:3]).shape == (3, 3)


def test_loss_normalisation_eps_keeps_zero_finite():
    z = torch.zeros(4, 3, requires_grad=True)
    loss = clip_loss(z, torch.randn(4, 3))
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) == pytest.approx(np.log(4), rel=1e-5)
    assert torch.isfinite(z.grad).all()


def test_loss_bad_input():
    with pytest.raises(ValueError, match="same length"):
        clip_loss(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match="embed_dim"):
        clip_loss(torch.randn(4, 8), torch.randn(4, 6))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        clip_loss(torch.randn(1, 8), torch.randn(1, 8))
    with pytest.raises(ValueError, match=r"\(B, d\)"):
        clip_loss(torch.randn(4), torch.randn(4))


# ------------------------------------------------------------- gathered negatives
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank, world, port, zi, zs, outdir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        b = zi.shape[0] // world
        li = zi[rank * b:(rank + 1) * b].clone().requires_grad_(True)
        ls = zs[rank * b:(rank + 1) * b].clone().requires_grad_(True)
        loss = clip_loss(li, ls, logit_scale=5.0, gather=True)
        loss.backward()
        torch.save({"loss": loss.detach(), "gi": li.grad, "gs": ls.grad},
                   os.path.join(outdir, f"rank{rank}.pt"))
        # no rank tears gloo down while the other still has collectives in flight
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_gathered_negatives_equal_one_big_batch(tmp_path):
    """2 gloo processes with half a batch each == one process with the whole batch."""
    world = 2
    zi, zs = torch.randn(8, 6, dtype=torch.float64), torch.randn(8, 6, dtype=torch.float64)
    torch.multiprocessing.spawn(_gather_worker, args=(world, _free_port(), zi, zs, str(tmp_path)),
                                nprocs=world, join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    fi, fs = zi.clone().requires_grad_(True), zs.clone().requires_grad_(True)
    full = clip_loss(fi, fs, logit_scale=5.0)
    full.backward()
    # DDP averages the per-rank losses and gradients
    assert float(sum(r["loss"] for r in res) / world) == pytest.approx(float(full), rel=1e-6)
    gi = torch.cat([r["gi"] for r in res]) / world
    gs = torch.cat([r["gs"] for r in res]) / world
    assert torch.allclose(gi.double(), fi.grad, atol=1e-6)
    assert torch.allclose(gs.double(), fs.grad, atol=1e-6)


# ------------------------------------------------------------------------ model
def test_encoders_and_bad_input():
    model = tiny()
    zi = model.encode_image(torch.rand(3, 3, 40, 40))
    zs = model.encode_spectrum(torch.rand(3, 7781))
    assert zi.shape == zs.shape == (3, 16)
    with pytest.raises(ValueError, match="3 images but 2 spectra"):
        model(torch.rand(3, 3, 40, 40), torch.rand(2, 7781))
    with pytest.raises(ValueError, match="bands g,r,z"):
        model.encode_image(torch.rand(3, 5, 40, 40))
    with pytest.raises(ValueError, match="smaller than"):
        model.encode_image(torch.rand(3, 3, 20, 20))
    with pytest.raises(ValueError, match="7781 pixels"):
        model.encode_spectrum(torch.rand(3, 5000))
    with pytest.raises(ValueError, match="same embed_dim"):
        AstroCLIP(image=TINY["image"], spectrum=dict(backbone=TINY["spectrum"]["backbone"],
                                                     pooling=dict(embed_dim=8, num_heads=2)))
    with pytest.raises(ValueError, match="freezing policy"):
        tiny(freeze="everything")


def _frozen_names(model):
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def test_paper_freezing_policy():
    model = tiny()
    frozen = _frozen_names(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    heads = ("spectrum_encoder.pooling.", "image_encoder.backbone.fc.")
    assert all(n.startswith(heads) for n in trainable)
    assert any(n.startswith("spectrum_encoder.pooling.") for n in trainable)
    assert any(n.startswith("image_encoder.backbone.fc.") for n in trainable)
    assert "image_encoder.backbone.conv1.weight" in frozen
    assert "spectrum_encoder.backbone.blocks.0.attention.attention.weight" in frozen
    # frozen parts stay in eval mode (BatchNorm statistics do not move) when training
    model.train()
    assert not model.image_encoder.backbone.layer1.training
    assert not model.spectrum_encoder.backbone.training
    assert model.image_encoder.backbone.fc.training

    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    for _ in range(3):
        zi, zs = model(torch.rand(6, 3, 40, 40), torch.rand(6, 7781))
        opt.zero_grad()
        model.loss(zi, zs).backward()
        opt.step()
    after = model.state_dict()
    for k in before:
        param_frozen = k in frozen
        is_buffer = k not in dict(model.named_parameters())
        if param_frozen or (is_buffer and k.startswith("image_encoder.backbone.")):
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["image_encoder.backbone.fc.0.weight"],
                           after["image_encoder.backbone.fc.0.weight"])
    assert not torch.equal(before["spectrum_encoder.pooling.query"],
                           after["spectrum_encoder.pooling.query"])


def test_other_freezing_policies():
    model = tiny(freeze="none")
    used = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "image_encoder.backbone.conv1.weight" in used
    zi, zs = model(torch.rand(4, 3, 40, 40), torch.rand(4, 7781))
    model.loss(zi, zs).backward()
    # every trainable parameter receives a gradient (nothing unused for DDP)
    assert all(p.grad is not None for p in model.trainable_parameters())
    m2 = tiny(freeze={"image": "all", "spectrum": "none"})
    assert not any(p.requires_grad for p in m2.image_encoder.parameters())
    assert m2.spectrum_encoder.backbone.blocks[0].layernorm1.weight.requires_grad
    assert m2.config["freeze"] == {"image": "all", "spectrum": "none"}


def test_save_and_load_roundtrip(tmp_path):
    model = tiny(logit_scale=10.0).eval()
    folder = weights.save_model(model, tmp_path / "clip")
    again = factory.create_model(folder)
    assert isinstance(again, AstroCLIP) and again.logit_scale == 10.0
    x, f = torch.rand(2, 3, 40, 40), torch.rand(2, 7781)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(x), again.encode_image(x))
        assert torch.allclose(model.encode_spectrum(f), again.encode_spectrum(f))


# ------------------------------------------------------------ released layout
def released_state(model):
    """Our AstroCLIP state dict renamed to the released astroclip.ckpt layout."""
    out = {}
    for k, v in model.state_dict().items():
        k2 = (k.replace("image_encoder.cross_attention.mlp.", "image_encoder.mlp.")
               .replace("spectrum_encoder.pooling.mlp.", "spectrum_encoder.mlp.")
               .replace("spectrum_encoder.pooling.", "spectrum_encoder.cross_attention."))
        out[k2] = v
    return out


def test_convert_released_astroclip_checkpoint(tmp_path):
    vit_clip = AstroCLIP(
        image=dict(backbone="vit", embed_dim=32, crop_size=48, input_mapping="color_map",
                   backbone_kwargs=dict(img_size=48, embed_dim=32, depth=2, num_heads=2,
                                        block_chunks=2)),
        spectrum=dict(backbone=dict(embed_dim=16, num_layers=1, num_heads=2),
                      pooling=dict(num_heads=4)))
    state = released_state(vit_clip)
    # the names of method.md section 6
    for key in ("image_encoder.backbone.blocks.1.1.ls2.gamma",
                "image_encoder.cross_attention.multihead_attn.in_proj_weight",  # kdim == d
                "image_encoder.mlp.encoder.weight",
                "spectrum_encoder.cross_attention.multihead_attn.k_proj_weight",
                "spectrum_encoder.mlp.decoder.weight",
                "spectrum_encoder.backbone.blocks.0.attention.attention.weight"):
        assert key in state, key
    state["logit_scale"] = torch.tensor(2.74)
    path = tmp_path / "astroclip.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"logit_scale": 15.5}}, path)
    folder = factory.convert_released_checkpoint(path, out=tmp_path / "conv", part="astroclip",
                                                 image_num_heads=2, spectrum_num_heads=2)
    model = factory.create_model(folder)
    assert isinstance(model, AstroCLIP) and model.logit_scale == 15.5
    x, f = torch.rand(2, 3, 152, 152) * 0.1, torch.rand(2, 7781)
    vit_clip.eval()
    with torch.no_grad():
        assert torch.allclose(model.encode_image(x), vit_clip.encode_image(x), atol=1e-6)
        assert torch.allclose(model.encode_spectrum(f), vit_clip.encode_spectrum(f), atol=1e-6)
    # image side alone
    folder = factory.convert_released_checkpoint(path, out=tmp_path / "img", part="astroclip-image",
                                                 num_heads=2)
    assert type(factory.create_model(folder)).__name__ == "ImageEncoder"
    # another architecture is refused with a clear message
    bad = dict(state)
    bad.pop("image_encoder.backbone.norm.weight")
    with pytest.raises(ValueError, match="norm.weight"):
        convert_astroclip(bad, {}, image_num_heads=2, spectrum_num_heads=2)
