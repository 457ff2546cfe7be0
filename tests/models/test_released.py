"""The released checkpoints as their training code writes them: read safely, converted, embedded.

The files are written here the way the public reference code's training writes
them (see ``_reference_source.py``): ``astroclip.ckpt`` by Lightning's
``Trainer.save_checkpoint`` from an ``AstroClipModel`` whose hyper-parameters
hold its encoder modules, ``specformer.ckpt`` from a ``SpecFormer``
LightningModule, and ``astrodino.ckpt`` as the DINOv2 trainer's
``{"teacher": teacher.state_dict()}``.  The module defining the classes is
deleted before any file is read.  Sizes are reduced (random weights); the
converted models must reproduce the reference modules' outputs.
"""

import importlib
import importlib.util
import pickle
import sys
import warnings

import numpy as np
import pytest
import torch

from astroclip.cli import main
from astroclip.exceptions import InputError
from astroclip.inputs import grid
from astroclip.models.convert import read_checkpoint
from astroclip.models.image import ImageEncoder
from astroclip.models.factory import convert_released_checkpoint
from astroclip.models.factory import create_model as load_model
from astroclip.models.weights import read_model_config
from tests.inputs.test_images import _color_map_reference
from tests.models._reference_source import SOURCE
from tests.models.test_weights import _flux

pytestmark = pytest.mark.usefixtures("one_thread")

L = pytest.importorskip("lightning")

MODULE = "astroclip_throwaway_reference"
SPEC = dict(input_dim=22, embed_dim=48, num_layers=1, num_heads=2, max_len=800,
            mask_num_chunks=6, mask_chunk_width=50, slice_section_length=20, slice_overlap=10,
            dropout=0.1, norm_first=False)
VIT = dict(img_size=48, patch_size=12, embed_dim=32, depth=2, num_heads=2, block_chunks=2)
D = 32            # embedding width (= ViT width, as released: packed in_proj on the image side)
N = 3             # objects


def _randomize(module, g):
    """Random weights of a realistic scale (LayerNorm weights near 1, layer scales near 0.5)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[-1] ** -0.5)
    return module.eval()


def _crop_rgb(images, size):
    top = (images.shape[-1] - size) // 2
    crop = images[:, :, top:top + size, top:top + size]
    return torch.tensor(np.stack([_color_map_reference(im) for im in crop]), dtype=torch.float32)


def _save_lightning(module, path):
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """The three files, reference inputs and outputs; the defining module is gone afterwards."""
    folder = tmp_path_factory.mktemp("reference")
    (folder / f"{MODULE}.py").write_text(SOURCE)
    sys.path.insert(0, str(folder))
    g = torch.Generator().manual_seed(13)
    try:
        ref = importlib.import_module(MODULE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning: "is an instance of nn.Module"
            spectrum = _randomize(ref.SpectrumHead(SPEC, D, n_head=4, model_embed_dim=48), g)
            image = _randomize(ref.ImageHead(ref.DinoVisionTransformer(**VIT), D, n_head=4,
                                             model_embed_dim=VIT["embed_dim"]), g)
            clip = ref.AstroClipModel(image, spectrum)
            _save_lightning(clip, folder / "astroclip.ckpt")
            _save_lightning(spectrum.backbone, folder / "specformer.ckpt")
        dino = _randomize(ref.DinoVisionTransformer(**VIT), g)
        teacher = torch.nn.ModuleDict({"backbone": dino,
                                       "dino_head": ref.DINOHead(32, 24, 8, 40),
                                       "ibot_head": ref.DINOHead(32, 24, 8, 40)})
        torch.save({"teacher": teacher.state_dict()}, folder / "astrodino.ckpt")

        flux = _flux(g, N)
        images = 0.05 + 0.02 * torch.randn(N, 3, 152, 152, generator=g)
        rgb = _crop_rgb(images.numpy(), VIT["img_size"])
        with torch.no_grad():
            expected = {"astroclip_spectrum": spectrum(flux), "astroclip_image": image(rgb),
                        "specformer": spectrum.backbone(flux)["embedding"].mean(1),
                        "astrodino": dino(rgb)}
        states = {"astroclip": clip.state_dict(), "astrodino": teacher.state_dict(),
                  "specformer": spectrum.backbone.state_dict()}
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(MODULE, None)
        (folder / f"{MODULE}.py").unlink()
    assert importlib.util.find_spec(MODULE) is None
    return dict(folder=folder, flux=flux, images=images, expected=expected, states=states)


def _close(got, want):
    torch.testing.assert_close(torch.as_tensor(got).double(), want.double(), atol=1e-5,
                               rtol=1e-5)


# ------------------------------------------------------------------ reading safely
def test_astroclip_ckpt_pickles_modules_that_cannot_be_imported(released):
    path = released["folder"] / "astroclip.ckpt"
    with pytest.raises(pickle.UnpicklingError):           # the old path refused the file
        torch.load(path, weights_only=True)
    with pytest.raises(ModuleNotFoundError, match=MODULE):  # and it really pickles the classes
        torch.load(path, weights_only=False)
    ckpt = read_checkpoint(path)
    assert ckpt.layout == "lightning" and ckpt.restricted
    assert ckpt.hyper_parameters == {"temperature": 15.5, "lr": 1e-4, "weight_decay": 0.05,
                                     "epochs": 100, "eta_min": 5e-7, "logit_scale": 15.5,
                                     "learnable_logit_scale": False}
    assert ckpt.skipped_hyper_parameters == ["image_encoder", "spectrum_encoder"]
    for name in ("ImageHead", "SpectrumHead", "SpecFormer", "CrossAttentionHead",
                 "DinoVisionTransformer", "BlockChunk", "NestedTensorBlock", "LayerScale"):
        assert f"{MODULE}.{name}" in ckpt.not_imported, name
    assert "torch.nn.modules.activation.MultiheadAttention" in ckpt.not_imported
    own = released["states"]["astroclip"]
    assert set(ckpt.state_dict) == set(own)
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in own.items())


def test_plain_checkpoints_take_the_weights_only_path(released):
    spec = read_checkpoint(released["folder"] / "specformer.ckpt")
    assert spec.layout == "lightning" and not spec.restricted and spec.not_imported == []
    assert spec.hyper_parameters == SPEC
    dino = read_checkpoint(released["folder"] / "astrodino.ckpt")
    assert dino.layout == "dinov2-teacher" and not dino.restricted
    assert set(dino.state_dict) == set(released["states"]["astrodino"])


# ------------------------------------------------------------------ converting
def _released_name(ours):
    """The astroclip.ckpt name of one of our AstroCLIP state-dict names."""
    return (ours.replace("image_encoder.cross_attention.mlp.", "image_encoder.mlp.")
            .replace("spectrum_encoder.pooling.mlp.", "spectrum_encoder.mlp.")
            .replace("spectrum_encoder.pooling.", "spectrum_encoder.cross_attention."))


def test_astroclip_parts_convert_and_match_the_reference(released, tmp_path):
    path, exp = released["folder"] / "astroclip.ckpt", released["expected"]
    source = released["states"]["astroclip"]
    clip = load_model(convert_released_checkpoint(path, out=tmp_path / "clip", part="astroclip",
                                                  num_heads=2))
    ours = clip.state_dict()
    assert {_released_name(k) for k in ours} == set(source)        # nothing lost, nothing added
    for key, value in ours.items():
        assert torch.equal(value, source[_released_name(key)]), key
    assert clip.logit_scale == 15.5
    with torch.no_grad():
        _close(clip.encode_spectrum(released["flux"]), exp["astroclip_spectrum"])
        _close(clip.encode_image(released["images"]), exp["astroclip_image"])
    meta = read_model_config(tmp_path / "clip")["metadata"]
    assert meta["source_layout"] == "lightning"
    assert f"{MODULE}.ImageHead" in meta["source_objects_not_imported"]
    assert meta["source_hyper_parameters"]["temperature"] == 15.5

    image = load_model(convert_released_checkpoint(path, out=tmp_path / "img",
                                                   part="astroclip-image", num_heads=2))
    spec = load_model(convert_released_checkpoint(path, out=tmp_path / "spec",
                                                  part="astroclip-spectrum", num_heads=2))
    with torch.no_grad():
        _close(image.encode_image(released["images"]), exp["astroclip_image"])
        _close(spec.encode_spectrum(released["flux"]), exp["astroclip_spectrum"])


def test_specformer_converts_and_embeds_with_the_mean_token(released, tmp_path):
    enc = load_model(convert_released_checkpoint(released["folder"] / "specformer.ckpt",
                                                 out=tmp_path / "sf"))
    source = released["states"]["specformer"]
    assert set(enc.state_dict()) == set(source)
    assert all(torch.equal(enc.state_dict()[k], v) for k, v in source.items())
    with torch.no_grad():
        _close(enc.encode_spectrum(released["flux"]), released["expected"]["specformer"])


def test_astrodino_teacher_converts_to_the_class_token(released, tmp_path):
    path = released["folder"] / "astrodino.ckpt"
    teacher = released["states"]["astrodino"]
    a = load_model(convert_released_checkpoint(path, out=tmp_path / "a", part="astrodino",
                                               num_heads=2))
    b = load_model(convert_released_checkpoint(path, out=tmp_path / "b", part="astrodino",
                                               num_heads=2))
    assert isinstance(a, ImageEncoder) and a.embedding == "class_token"
    assert a.embed_dim == VIT["embed_dim"] and a.cross_attention is None
    backbone = {k[len("backbone."):]: v for k, v in teacher.items() if k.startswith("backbone.")}
    got = a.backbone.state_dict()
    assert set(got) == set(backbone)                       # the DINO/iBOT heads are left out
    assert all(torch.equal(got[k], v) for k, v in backbone.items())
    with torch.no_grad():
        za, zb = a.encode_image(released["images"]), b.encode_image(released["images"])
    assert torch.equal(za, zb)                             # no random head: deterministic
    _close(za, released["expected"]["astrodino"])

    # the same teacher saved in half precision (mixed-precision training) and as a bare
    # ViT state dict with DDP's prefix
    half = {"teacher": {k: v.half() for k, v in teacher.items()}}
    torch.save(half, tmp_path / "half.ckpt")
    h = load_model(convert_released_checkpoint(tmp_path / "half.ckpt", out=tmp_path / "h",
                                               part="astrodino", num_heads=2))
    assert h.backbone.cls_token.dtype == torch.float32
    torch.save({f"module.{k}": v for k, v in backbone.items()}, tmp_path / "bare.pth")
    bare = load_model(convert_released_checkpoint(tmp_path / "bare.pth", out=tmp_path / "bare",
                                                  part="astrodino", num_heads=2))
    with torch.no_grad():
        assert torch.equal(bare.encode_image(released["images"]), za)


def test_astrodino_layout_errors(tmp_path):
    from astroclip.exceptions import CheckpointError

    path = tmp_path / "x.ckpt"
    torch.save({"teacher": {"backbone.cls_token": torch.zeros(1, 1, 8),
                            "student.backbone.cls_token": torch.zeros(1, 1, 8)}}, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys.*student\.backbone.*teacher"):
        convert_released_checkpoint(path, out=tmp_path / "o", part="astrodino")
    torch.save({"model": {"a": torch.zeros(1)}, "iteration": 3}, path)
    with pytest.raises(CheckpointError, match=r"neither 'state_dict'.*'teacher'.*\['iteration'"):
        convert_released_checkpoint(path, out=tmp_path / "o", part="astrodino")
    assert not (tmp_path / "o").exists()


def test_aligning_from_a_converted_astrodino_gets_a_fresh_head(released, tmp_path):
    from astroclip.training.align import resolve_image_encoder

    folder = convert_released_checkpoint(released["folder"] / "astrodino.ckpt",
                                         out=tmp_path / "dino", part="astrodino", num_heads=2)
    enc, pretrained = resolve_image_encoder(folder, preset="vit-small")
    assert pretrained and enc.embedding == "head" and enc.embed_dim == 128
    dino = load_model(folder)
    assert all(torch.equal(enc.backbone.state_dict()[k], v)
               for k, v in dino.backbone.state_dict().items())
    assert enc(released["images"]).shape == (N, 128)


# ------------------------------------------------------------------ the user path
def test_embed_with_released_names(released, tmp_path, monkeypatch):
    import astroclip
    from astroclip.models import factory

    monkeypatch.setenv("ASTROCLIP_MODEL_DIR", str(tmp_path / "models"))
    folder, exp = released["folder"], released["expected"]
    options = {"astroclip-released": {"num_heads": 2}, "astrodino-released": {"num_heads": 2},
               "specformer-released": {}}

    def fetch(name):
        entry = factory.MODELS[name]
        if not options[name]:       # the released sizes need no option: the factory's path
            factory.fetch_released(name, checkpoint=folder / entry.filename, overwrite=True)
            return
        # what fetch_released does after the download, with the options of these tiny sizes
        convert_released_checkpoint(folder / entry.filename, out=factory.model_dir() / name,
                                    part=entry.part, overwrite=True, **options[name])

    for name in options:
        fetch(name)
    flux = released["flux"].numpy() * grid.FLUX_UNIT
    kw = dict(wavelength=grid.wavelength_grid(), progress=False, device="cpu")
    ikw = dict(bands="grz", unit="nanomaggy", progress=False, device="cpu")
    images = released["images"].numpy()
    first = {
        "astroclip_spectrum": astroclip.embed_spectrum(flux, model="astroclip-released", **kw),
        "astroclip_image": astroclip.embed_image(images, model="astroclip-released", **ikw),
        "specformer": astroclip.embed_spectrum(flux, model="specformer-released", **kw),
        "astrodino": astroclip.embed_image(images, model="astrodino-released", **ikw)}
    widths = {"astroclip_spectrum": D, "astroclip_image": D, "specformer": SPEC["embed_dim"],
              "astrodino": VIT["embed_dim"]}
    for key, emb in first.items():
        assert emb.shape == (N, widths[key]) and emb.dtype == np.float32, key
        _close(emb, exp[key])
    for name in options:                                   # converted again: same answers
        fetch(name)
    again = {
        "astroclip_spectrum": astroclip.embed_spectrum(flux, model="astroclip-released", **kw),
        "astroclip_image": astroclip.embed_image(images, model="astroclip-released", **ikw),
        "specformer": astroclip.embed_spectrum(flux, model="specformer-released", **kw),
        "astrodino": astroclip.embed_image(images, model="astrodino-released", **ikw)}
    for key, emb in again.items():
        assert np.array_equal(emb, first[key]), key
    with pytest.raises(InputError, match=r"cannot embed image data.*embed_spectrum"):
        astroclip.embed_image(images, model="specformer-released", **ikw)
    with pytest.raises(InputError, match=r"cannot embed spectrum data.*embed_image"):
        astroclip.embed_spectrum(flux, model="astrodino-released", **kw)


def test_cli_convert_whole_astroclip_with_num_heads(released, tmp_path, capsys):
    path = str(released["folder"] / "astroclip.ckpt")
    # these reduced widths need the head counts (the released ones are inferred)
    assert main(["convert-weights", path, "--part", "astroclip", "--out",
                 str(tmp_path / "a")]) == 1
    assert "num_heads" in capsys.readouterr().err
    assert main(["convert-weights", path, "--part", "astroclip", "--num-heads", "2",
                 "--out", str(tmp_path / "a")]) == 0
    model = load_model(tmp_path / "a")
    assert model.image_encoder.backbone.blocks[0][0].attn.num_heads == 2
    assert model.spectrum_encoder.backbone.num_heads == 2
    assert main(["convert-weights", path, "--part", "astroclip", "--image-num-heads", "2",
                 "--spectrum-num-heads", "2", "--out", str(tmp_path / "b")]) == 0
    assert main(["convert-weights", path, "--part", "specformer", "--image-num-heads", "2",
                 "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "part 'specformer' does not take image_num_heads" in err and "num_heads" in err
