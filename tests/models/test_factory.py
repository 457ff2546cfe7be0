import json

import pytest
import torch

from astroclip.exceptions import InputError, ModelFormatError, ModelNotFoundError
from astroclip.models.weights import save_model

from astroclip.models import factory, store
from astroclip.models.factory import ModelEntry
from astroclip.models.factory import create_model as load_folder
from astroclip.models.spectrum import SpectrumEncoder


@pytest.fixture
def model_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROCLIP_MODEL_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


def _fake_specformer_ckpt(path):
    """A checkpoint with the released specformer.ckpt layout, tiny sizes."""
    enc = SpectrumEncoder(embed_dim=16, num_layers=1, num_heads=2)
    torch.save({"state_dict": enc.state_dict(),
                "hyper_parameters": {"num_heads": 2, "slice_section_length": 20,
                                     "slice_overlap": 10}}, path)
    return enc


def _entry(tmp_path, monkeypatch, *, sha256=None, exists=True):
    ckpt = tmp_path / "specformer.ckpt"
    enc = _fake_specformer_ckpt(ckpt) if exists else None
    entry = ModelEntry(name="tiny-released", kind="released", family="spectrum",
                       repo_id="x/y", filename="specformer.ckpt", part="specformer",
                       description="test", sha256=sha256, url=ckpt.as_uri())
    monkeypatch.setitem(factory.MODELS, "tiny-released", entry)
    return entry, enc, ckpt


def test_released_model_fetched_verified_converted_once(tmp_path, monkeypatch, model_home):
    entry, enc, ckpt = _entry(tmp_path, monkeypatch)
    path = factory.model_path("tiny-released")
    assert path == model_home / "tiny-released"
    source = json.loads((path / "source.json").read_text())
    assert source["checkpoint_sha256"] == store.sha256_file(ckpt)
    model = load_folder(path)
    for name, tensor in enc.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    # converted once: a second resolve does not convert again
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert factory.model_path("tiny-released") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    table = factory.list_models()
    row = table[table["name"] == "tiny-released"][0]
    assert row["available"] and row["source"] == "released"


def test_checksum_mismatch_refused(tmp_path, monkeypatch, model_home):
    _entry(tmp_path, monkeypatch, sha256="0" * 64)
    with pytest.raises(ValueError, match="checksum mismatch"):
        factory.model_path("tiny-released")
    assert not (model_home / "tiny-released" / "config.json").exists()


def test_offline_error_says_what_to_do(tmp_path, monkeypatch, model_home):
    entry, _, _ = _entry(tmp_path, monkeypatch, exists=False)
    with pytest.raises(OSError, match="convert-weights") as info:
        factory.model_path("tiny-released")
    assert entry.download_url in str(info.value)


def test_unknown_name_suggests_close_names(model_home):
    with pytest.raises(ModelNotFoundError, match=r"did you mean 'clip-small'") as info:
        factory.model_path("clip-smal")
    assert isinstance(info.value, ValueError) and isinstance(info.value, LookupError)
    assert "list_models()" in str(info.value)
    with pytest.raises(ModelNotFoundError, match="astroclip-released"):
        factory.create_model("astroclip-relased")
    # a bare preset name of the family asked for; the message suggests the family's names
    with pytest.raises(ModelNotFoundError, match="image-resnet-small"):
        factory.create_model("resnet-smal", family="image")


def test_register_model_and_list(tmp_path, model_home):
    enc = SpectrumEncoder(embed_dim=16, num_layers=1, num_heads=2)
    save_model(enc, tmp_path / "run")
    dst = factory.register_model(tmp_path / "run", "mine")
    assert factory.model_path("mine") == dst
    with pytest.raises(FileExistsError):
        factory.register_model(tmp_path / "run", "mine")
    with pytest.raises(ValueError, match="released"):
        factory.register_model(tmp_path / "run", "astroclip-released")
    table = factory.list_models()
    assert "mine" in list(table["name"])


# ----------------------------------------------------------------- the table and create_model
def test_list_models_covers_every_kind_of_name(model_home):
    from astroclip.models.presets import CLIP_PRESETS, IMAGE_PRESETS, SPECTRUM_PRESETS

    table = factory.list_models()
    kinds = {str(n): str(k) for n, k in zip(table["name"], table["kind"])}
    # the presets are read from models/presets.py, not declared again
    for family, presets in (("spectrum", SPECTRUM_PRESETS), ("image", IMAGE_PRESETS),
                            ("clip", CLIP_PRESETS)):
        for key in presets:
            assert kinds[f"{family}-{key}"] == "preset"
    for name in ("SpectrumEncoder", "SpectrumEmbedder", "ImageEncoder", "AstroCLIP",
                 "CrossAttentionHead", "MLP"):
        assert kinds[name] == "class"
    for name in ("specformer", "astroclip", "astroclip-image", "astroclip-spectrum",
                 "astrodino"):
        assert kinds[name] == "part"
    for name in ("astroclip-released", "specformer-released", "astrodino-released"):
        assert kinds[name] == "released"
    assert set(factory.list_models(kind="part", family="image")["name"]) == {
        "astroclip-image", "astrodino"}
    with pytest.raises(InputError, match="unknown kind"):
        factory.list_models(kind="checkpoint")


def test_table_names_classes_as_strings_only():
    """Classes are "module:attr" strings resolved by the factory (no import side effects)."""
    for entry in factory.MODELS.values():
        if entry.kind in ("preset", "class", "part"):
            module, _, attr = entry.target.partition(":")
            assert module.startswith("astroclip.models.") and attr, entry


def test_create_model_preset_with_overrides():
    from astroclip.models.image import ImageEncoder

    model = factory.create_model("spectrum-small", num_layers=1, embed_dim=32)
    assert isinstance(model, SpectrumEncoder) and not model.training
    assert (model.config["num_layers"], model.config["embed_dim"]) == (1, 32)
    assert len(model.blocks) == 1
    # the family makes the bare preset name work, as in align(spectrum_model="small")
    same = factory.create_model("small", family="spectrum", num_layers=1, embed_dim=32)
    assert same.config == model.config
    image = factory.create_model("image-resnet-small")
    assert isinstance(image, ImageEncoder) and image.embed_dim == 128
    with pytest.raises(InputError, match="cannot be built"):
        factory.create_model("spectrum-small", no_such_option=3)


def test_create_model_class_and_pretrained_from_a_folder(tmp_path, model_home):
    from astroclip.models.heads import MLP

    trained = MLP(3, (5,), 2)
    folder = save_model(trained, tmp_path / "mlp")
    fresh = factory.create_model("MLP", in_features=3, hidden_features=(5,), out_features=2)
    assert isinstance(fresh, MLP)
    weight = trained.state_dict()["layers.0.weight"]
    assert not torch.equal(fresh.state_dict()["layers.0.weight"], weight)
    loaded = factory.create_model("MLP", in_features=3, hidden_features=(5,), out_features=2,
                                  pretrained=folder)
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # a registered name works as pretrained= too; a wrong architecture names the tensors
    factory.register_model(folder, "tiny-mlp")
    again = factory.create_model("MLP", in_features=3, hidden_features=(5,), out_features=2,
                                 pretrained="tiny-mlp")
    assert torch.equal(again.state_dict()["layers.0.weight"], weight)
    with pytest.raises(ModelFormatError, match="wrong shapes: layers.0.weight"):
        factory.create_model("MLP", in_features=4, hidden_features=(5,), out_features=2,
                             pretrained=folder)
    # the folder (and its registered name) loads as it is, without overrides
    assert torch.equal(factory.create_model("tiny-mlp").state_dict()["layers.3.bias"],
                       trained.state_dict()["layers.3.bias"])
    with pytest.raises(InputError, match="architecture is fixed"):
        factory.create_model(folder, out_features=3)
    with pytest.raises(InputError, match="pretrained= is not used"):
        factory.create_model(folder, pretrained=folder)


def test_create_model_part_needs_its_checkpoint(tmp_path):
    enc = _fake_specformer_ckpt(tmp_path / "specformer.ckpt")
    model = factory.create_model("specformer", pretrained=tmp_path / "specformer.ckpt")
    assert isinstance(model, SpectrumEncoder) and model.config["embed_dim"] == 16
    for key, value in enc.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(InputError, match="pretrained=.*specformer-released"):
        factory.create_model("specformer")
    with pytest.raises(InputError, match="does not take pooling_heads"):
        factory.create_model("specformer", pretrained=tmp_path / "specformer.ckpt",
                             pooling_heads=2)
    # a spectrum preset takes the file as pretrained= when the sizes agree
    with pytest.raises(ModelFormatError, match="wrong shapes"):
        factory.create_model("spectrum-small", pretrained=tmp_path / "specformer.ckpt")
    same = factory.create_model("spectrum-small", embed_dim=16, num_layers=1, num_heads=2,
                                pretrained=tmp_path / "specformer.ckpt")
    assert torch.equal(same.state_dict()["data_embed.weight"],
                       enc.state_dict()["data_embed.weight"])


def test_create_model_released_from_a_checkpoint_on_disk(tmp_path, monkeypatch, model_home):
    entry, enc, ckpt = _entry(tmp_path, monkeypatch)
    model = factory.create_model("tiny-released", pretrained=ckpt)
    assert torch.equal(model.state_dict()["data_embed.weight"],
                       enc.state_dict()["data_embed.weight"])
    assert (model_home / "tiny-released" / "source.json").is_file()


def test_names_of_the_table_cannot_be_registered(tmp_path, model_home):
    folder = save_model(SpectrumEncoder(embed_dim=16, num_layers=1, num_heads=2), tmp_path / "m")
    for name in ("clip-small", "MLP", "astrodino"):
        with pytest.raises(InputError, match="choose another name"):
            factory.register_model(folder, name)


def test_load_model_refuses_untrained_names_and_unknown_names(model_home):
    import astroclip

    with pytest.raises(InputError, match=r"create_model\('clip-small'\)"):
        astroclip.load_model("clip-small", device="cpu")
    with pytest.raises(ModelNotFoundError, match="did you mean 'clip-small'"):
        astroclip.load_model("clip-smal", device="cpu")
    assert astroclip.create_model is factory.create_model
    assert astroclip.list_models is factory.list_models


def test_a_bare_backbone_where_an_embedder_is_needed_is_a_clear_error(rng):
    import astroclip
    from astroclip.models.image import ResNet
    from astroclip.training.align import resolve_image_encoder, resolve_spectrum_encoder

    backbone = ResNet(layers=(1, 1, 1, 1), width=8, num_classes=8)
    with pytest.raises(InputError, match="ResNet.*pass an ImageEncoder"):
        resolve_image_encoder(backbone)
    with pytest.raises(InputError, match="Linear.*SpectrumEncoder or SpectrumEmbedder"):
        resolve_spectrum_encoder(torch.nn.Linear(2, 2), pooling={})
    images = rng.random((2, 3, 32, 32)).astype("float32")
    with pytest.raises(InputError, match="no encode_image method.*ImageEncoder"):
        astroclip.embed_image(images, model=backbone, device="cpu", progress=False)


def test_alignment_starts_from_registered_names(tmp_path, model_home):
    """build_clip_model (what align runs) takes a registered aligned model and registered sides."""
    from astroclip.models.clip import AstroCLIP
    from astroclip.training.align import build_clip_model

    trained = factory.create_model("clip-small")
    factory.register_model(save_model(trained, tmp_path / "clip"), "my-clip")
    model, pretrained = build_clip_model(preset="my-clip")
    assert isinstance(model, AstroCLIP) and pretrained == {"image": True, "spectrum": True}
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model.logit_scale == trained.logit_scale
    # a registered spectrum transformer as one side of a preset
    enc = factory.create_model("spectrum-small", num_layers=1)
    factory.register_model(save_model(enc, tmp_path / "spec"), "my-spec")
    model, pretrained = build_clip_model(preset="small", spectrum_model="my-spec")
    assert pretrained == {"image": False, "spectrum": True}
    assert torch.equal(model.spectrum_encoder.backbone.state_dict()["data_embed.weight"],
                       enc.state_dict()["data_embed.weight"])
    with pytest.raises(InputError, match="not an aligned model"):
        build_clip_model(preset="my-spec")
