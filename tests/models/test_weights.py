"""Our weights format and the converter of released checkpoints.

The released files cannot be downloaded here, so the tests build checkpoints
with exactly the released layout (names and shapes of method.md section 6,
random tensors, a nested Lightning-style dict) and compare our converted
model against a forward pass written here, independently, from method.md.
"""

import copyreg
import functools
import json
import math
import os

import pytest
import torch

from astroclip.cli import main
from astroclip.exceptions import CheckpointError, ModelNotFoundError
from astroclip.inputs import grid
from astroclip.models.heads import MLP
from astroclip.models.convert import read_checkpoint
from astroclip.models.spectrum import SpectrumEncoder
from astroclip.models.factory import convert_released_checkpoint
from astroclip.models.factory import create_model as load_model
from astroclip.models.weights import CONFIG_FILE, WEIGHTS_FILE, read_model_config, save_model


# ----------------------------------------------------------------- released layout
def released_specformer_state(g, *, d=64, layers=2, max_len=800):
    """A state dict with the names/shapes of specformer.ckpt (method.md section 6)."""
    def w(*shape, scale=None):
        scale = shape[-1] ** -0.5 if scale is None else scale
        return torch.randn(*shape, generator=g) * scale

    sd = {"data_embed.weight": w(d, 22, scale=0.3), "data_embed.bias": w(d, scale=0.1),
          "position_embed.weight": w(max_len, d, scale=0.3)}
    for i in range(layers):
        p = f"blocks.{i}."
        sd.update({
            p + "layernorm1.weight": 1 + w(d, scale=0.1), p + "layernorm1.bias": w(d, scale=0.1),
            p + "attention.attention.weight": w(3 * d, d), p + "attention.attention.bias": w(3 * d, scale=0.1),
            p + "attention.projection.weight": w(d, d), p + "attention.projection.bias": w(d, scale=0.1),
            p + "layernorm2.weight": 1 + w(d, scale=0.1), p + "layernorm2.bias": w(d, scale=0.1),
            p + "mlp.encoder.weight": w(4 * d, d), p + "mlp.encoder.bias": w(4 * d, scale=0.1),
            p + "mlp.decoder.weight": w(d, 4 * d), p + "mlp.decoder.bias": w(d, scale=0.1),
        })
    sd.update({"final_layernorm.weight": 1 + w(d, scale=0.1), "final_layernorm.bias": w(d, scale=0.1),
               "head.weight": w(22, d), "head.bias": w(22, scale=0.1)})
    return sd


def released_head_state(g, *, d=32, kdim=64, prefix="spectrum_encoder."):
    """Pooling head names of astroclip.ckpt (MultiheadAttention with kdim = vdim != d)."""
    def w(*shape):
        return torch.randn(*shape, generator=g) * shape[-1] ** -0.5

    c = prefix + "cross_attention."
    return {c + "query": torch.randn(1, 1, d, generator=g),
            c + "multihead_attn.q_proj_weight": w(d, d),
            c + "multihead_attn.k_proj_weight": w(d, kdim),
            c + "multihead_attn.v_proj_weight": w(d, kdim),
            c + "multihead_attn.in_proj_bias": 0.1 * w(3 * d),
            c + "multihead_attn.out_proj.weight": w(d, d),
            c + "multihead_attn.out_proj.bias": 0.1 * w(d),
            c + "layernorm.weight": 1 + 0.1 * w(d), c + "layernorm.bias": 0.1 * w(d),
            prefix + "mlp.encoder.weight": w(4 * d, d), prefix + "mlp.encoder.bias": 0.1 * w(4 * d),
            prefix + "mlp.decoder.weight": w(d, 4 * d), prefix + "mlp.decoder.bias": 0.1 * w(d)}


def lightning_checkpoint(state, hparams):
    """A nested dict shaped like a Lightning checkpoint (plain containers only)."""
    return {"epoch": 3, "global_step": 1234, "pytorch-lightning_version": "2.1.2",
            "state_dict": state, "hyper_parameters": hparams,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4}}}},
            "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {
                "best_model_score": torch.tensor(0.1), "dirpath": "/tmp/x"}},
            "optimizer_states": [{"state": {0: {"step": torch.tensor(5.0)}},
                                  "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.95)}]}],
            "lr_schedulers": [{"last_epoch": 1234}]}


# ----------------------------------------------------------------- reference forward
def _ln(x, w, b):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * w + b


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def reference_specformer(sd, flux, heads):
    """Method.md section 2 written out in float64 with loops over windows and heads."""
    sd = {k: v.double() for k, v in sd.items()}
    f = flux.double()
    mu = f.mean(1)
    sigma = torch.clamp(f.std(1), min=0.2)          # std with Bessel's correction, as released
    x = (f - mu[:, None]) / sigma[:, None]
    windows = [x[:, s:s + 20] for s in range(0, f.shape[1] - 20 + 1, 10)]
    assert len(windows) == 777
    tokens = torch.zeros(f.shape[0], 778, 22, dtype=torch.float64)
    tokens[:, 0, 0] = (mu - 2) / 2
    tokens[:, 0, 1] = (sigma - 2) / 8
    for j, win in enumerate(windows):
        tokens[:, j + 1, 2:] = win
    h = tokens @ sd["data_embed.weight"].T + sd["data_embed.bias"] + sd["position_embed.weight"][:778]
    d = h.shape[-1]
    hd = d // heads
    i = 0
    while f"blocks.{i}.layernorm1.weight" in sd:
        p = f"blocks.{i}."
        a = _ln(h, sd[p + "layernorm1.weight"], sd[p + "layernorm1.bias"])
        qkv = a @ sd[p + "attention.attention.weight"].T + sd[p + "attention.attention.bias"]
        q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
        outs = []
        for hh in range(heads):
            sl = slice(hh * hd, (hh + 1) * hd)
            att = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(hd), dim=-1)
            outs.append(att @ v[..., sl])
        h = h + torch.cat(outs, -1) @ sd[p + "attention.projection.weight"].T + sd[p + "attention.projection.bias"]
        m = _ln(h, sd[p + "layernorm2.weight"], sd[p + "layernorm2.bias"])
        m = _gelu(m @ sd[p + "mlp.encoder.weight"].T + sd[p + "mlp.encoder.bias"])
        h = h + m @ sd[p + "mlp.decoder.weight"].T + sd[p + "mlp.decoder.bias"]
        i += 1
    h = _ln(h, sd["final_layernorm.weight"], sd["final_layernorm.bias"])
    return h, h @ sd["head.weight"].T + sd["head.bias"]


def reference_pooling(sd, tokens, heads, prefix="spectrum_encoder."):
    sd = {k[len(prefix):]: v.double() for k, v in sd.items() if k.startswith(prefix)}
    c = "cross_attention.multihead_attn."
    d = sd["cross_attention.query"].shape[-1]
    hd = d // heads
    bq, bk, bv = sd[c + "in_proj_bias"].split(d)
    q = sd["cross_attention.query"][0] @ sd[c + "q_proj_weight"].T + bq
    k = tokens @ sd[c + "k_proj_weight"].T + bk
    v = tokens @ sd[c + "v_proj_weight"].T + bv
    outs, maps = [], []
    for hh in range(heads):
        sl = slice(hh * hd, (hh + 1) * hd)
        att = torch.softmax(q[:, sl] @ k[..., sl].transpose(1, 2) / math.sqrt(hd), dim=-1)
        maps.append(att[:, 0])
        outs.append(att @ v[..., sl])
    o = torch.cat(outs, -1) @ sd[c + "out_proj.weight"].T + sd[c + "out_proj.bias"]
    z = _ln(o, sd["cross_attention.layernorm.weight"], sd["cross_attention.layernorm.bias"])
    m = _gelu(z @ sd["mlp.encoder.weight"].T + sd["mlp.encoder.bias"])
    z = z + m @ sd["mlp.decoder.weight"].T + sd["mlp.decoder.bias"]   # residual (released)
    return z[:, 0], torch.stack(maps, 1)


def _flux(g, n=2):
    wave = torch.tensor(grid.WAVELENGTH.copy())
    f = (1 + 3 * torch.rand(n, 1, generator=g)) * (wave / 6000) ** -1.0
    f = f + 4 * torch.exp(-0.5 * ((wave - 7200) / 3) ** 2) + 0.3 * torch.randn(n, 7781, generator=g)
    return f.float()


HPARAMS = {"input_dim": 22, "embed_dim": 64, "num_layers": 2, "num_heads": 4, "max_len": 800,
           "mask_num_chunks": 6, "mask_chunk_width": 50, "slice_section_length": 20,
           "slice_overlap": 10, "dropout": 0.1, "norm_first": False}


# ----------------------------------------------------------------- tests
def test_save_load_round_trip(tmp_path):
    model = SpectrumEncoder(embed_dim=16, num_layers=1, num_heads=2).eval()
    folder = save_model(model, tmp_path / "m", metadata={"note": "test", "path": tmp_path})
    assert (folder / WEIGHTS_FILE).is_file()
    doc = json.loads((folder / CONFIG_FILE).read_text())
    assert doc["format"] == "astroclip-weights" and doc["class"] == "SpectrumEncoder"
    assert doc["family"] == "spectrum" and doc["config"]["embed_dim"] == 16
    assert "astroclip_version" in doc and doc["metadata"]["note"] == "test"
    loaded = load_model(folder)
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = torch.rand(1, 7781)
    torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(FileExistsError, match="overwrite"):
        save_model(model, folder)
    save_model(MLP(3, (4,), 1), folder, overwrite=True)
    assert read_model_config(folder)["class"] == "MLP"
    with pytest.raises(ValueError, match="not an astroclip model class"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "lin")
    with pytest.raises(ModelNotFoundError, match="no model folder at .*nothing"):
        load_model(tmp_path / "nothing")


def test_specformer_conversion_matches_reference_forward(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = released_specformer_state(g)
    path = tmp_path / "specformer.ckpt"
    torch.save(lightning_checkpoint(state, HPARAMS), path)
    out = convert_released_checkpoint(path, out=tmp_path / "converted", part="specformer")
    model = load_model(out)
    assert model.config["num_heads"] == 4 and model.config["num_layers"] == 2
    assert model.config["mask_run_length"] == 50 and model.config["dropout"] == 0.1
    ours = model.state_dict()
    assert set(ours) == set(state)
    for k, v in state.items():                       # every tensor where it must be
        assert torch.equal(ours[k], v), k
    flux = _flux(g)
    ref_emb, ref_pred = reference_specformer(state, flux, heads=4)
    with torch.no_grad():
        emb = model(flux)
        pred = model.predict_tokens(model.tokenize(flux))
    torch.testing.assert_close(emb.double(), ref_emb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pred.double(), ref_pred, atol=1e-5, rtol=1e-5)
    meta = read_model_config(out)["metadata"]
    assert meta["converted_from"] == "specformer.ckpt" and meta["part"] == "specformer"


def test_released_size_names_and_shapes(tmp_path):
    """The full 768-wide, 6-block layout converts tensor by tensor (no forward: too slow)."""
    g = torch.Generator().manual_seed(1)
    state = released_specformer_state(g, d=768, layers=6)
    assert state["blocks.5.attention.attention.weight"].shape == (2304, 768)
    assert state["blocks.0.mlp.encoder.weight"].shape == (3072, 768)
    path = tmp_path / "specformer.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"num_heads": 6}}, path)
    model = load_model(convert_released_checkpoint(path, out=tmp_path / "full"))
    assert model.num_parameters() == 43_177_750
    ours = model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in state.items())


def test_astroclip_spectrum_side_matches_reference(tmp_path):
    g = torch.Generator().manual_seed(2)
    state = {"spectrum_encoder.backbone." + k: v for k, v in released_specformer_state(g).items()}
    state.update(released_head_state(g, d=32, kdim=64))
    # the image side and the loss constant are ignored by this part
    state["image_encoder.backbone.patch_embed.proj.weight"] = torch.zeros(8, 3, 12, 12)
    state["image_encoder.cross_attention.multihead_attn.in_proj_weight"] = torch.zeros(24, 8)
    path = tmp_path / "astroclip.ckpt"
    torch.save(lightning_checkpoint(state, {"num_heads": 4, "temperature": 15.5}), path)
    out = convert_released_checkpoint(path, out=tmp_path / "spec", part="astroclip-spectrum")
    model = load_model(out)
    assert model.config["pooling"]["embed_dim"] == 32 and model.config["pooling"]["residual"]
    ours = model.state_dict()
    assert torch.equal(ours["pooling.multihead_attn.k_proj_weight"],
                       state["spectrum_encoder.cross_attention.multihead_attn.k_proj_weight"])
    assert torch.equal(ours["pooling.mlp.decoder.weight"], state["spectrum_encoder.mlp.decoder.weight"])
    assert torch.equal(ours["backbone.blocks.1.attention.attention.weight"],
                       state["spectrum_encoder.backbone.blocks.1.attention.attention.weight"])
    flux = _flux(g, 3)
    backbone = {k[len("spectrum_encoder.backbone."):]: v for k, v in state.items()
                if k.startswith("spectrum_encoder.backbone.")}
    ref_tokens, _ = reference_specformer(backbone, flux, heads=4)
    ref_z, ref_w = reference_pooling(state, ref_tokens, heads=4)
    with torch.no_grad():
        z, w = model(flux, return_weights=True)
    torch.testing.assert_close(z.double(), ref_z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w.double(), ref_w, atol=1e-6, rtol=1e-5)


def test_missing_unexpected_and_wrong_shapes(tmp_path):
    g = torch.Generator().manual_seed(3)
    base = released_specformer_state(g, d=32, layers=1)
    hp = {"num_heads": 2}

    def convert(state, name):
        path = tmp_path / f"{name}.ckpt"
        torch.save({"state_dict": state, "hyper_parameters": hp}, path)
        return convert_released_checkpoint(path, out=tmp_path / name)

    missing = dict(base)
    del missing["blocks.0.mlp.decoder.bias"]
    with pytest.raises(ValueError, match=r"missing keys: blocks\.0\.mlp\.decoder\.bias"):
        convert(missing, "missing")
    extra = dict(base, **{"final_layernorm.scale": torch.ones(32)})
    with pytest.raises(ValueError, match=r"unexpected keys: final_layernorm\.scale"):
        convert(extra, "extra")
    wrong = dict(base, **{"head.weight": torch.zeros(23, 32)})
    with pytest.raises(ValueError, match=r"wrong shapes: head\.weight \(23, 32\) \(expected \(22, 32\)\)"):
        convert(wrong, "wrong")
    assert not (tmp_path / "missing").exists() and not (tmp_path / "wrong").exists()
    side = {"spectrum_encoder.backbone." + k: v for k, v in base.items()}
    side.update(released_head_state(g, d=16, kdim=32))
    side["spectrum_encoder.logit_scale"] = torch.ones(())
    path = tmp_path / "clip.ckpt"
    torch.save({"state_dict": side, "hyper_parameters": hp}, path)
    with pytest.raises(ValueError, match=r"unexpected keys.*spectrum_encoder\.logit_scale"):
        convert_released_checkpoint(path, out=tmp_path / "clip", part="astroclip-spectrum")
    with pytest.raises(ValueError, match="unknown part 'everything'.*specformer"):
        convert_released_checkpoint(path, out=tmp_path / "x", part="everything")
    with pytest.raises(FileNotFoundError):
        convert_released_checkpoint(tmp_path / "absent.ckpt", out=tmp_path / "x")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint|refusing"):
        convert_released_checkpoint(tmp_path / "junk.ckpt", out=tmp_path / "x")


class _SetStatePayload:
    """Filling this object (pickle BUILD) creates the marker file, if the class is imported."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_SetStatePayload, ("unused",), {"marker": self.marker})

    def __setstate__(self, state):
        open(state["marker"], "w").close()


class _NewPayload:
    """Creating this object (pickle NEWOBJ) creates the marker file, if the class is imported."""

    def __new__(cls, marker):
        open(marker, "w").close()
        return object.__new__(cls)

    def __reduce_ex__(self, protocol):
        return (copyreg.__newobj__, (type(self), self.marker))


def _payload(kind, marker):
    command = f"touch {marker}"
    if kind == "reduce":                  # REDUCE of os.system
        return _Reduce(os.system, (command,))
    if kind == "partial":                 # REDUCE of a callable built by REDUCE + BUILD
        return _Reduce(functools.partial(os.system, command), ())
    if kind == "setstate":
        return _SetStatePayload(marker)
    new = object.__new__(_NewPayload)
    new.marker = str(marker)
    return new


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


@pytest.mark.parametrize("kind", ["reduce", "reduce_legacy_format", "partial", "setstate",
                                  "newobj", "in_state_dict"])
def test_code_executing_pickles_run_nothing(tmp_path, kind):
    marker = tmp_path / "pwned"
    g = torch.Generator().manual_seed(4)
    state = released_specformer_state(g, d=16, layers=1)
    hparams = {"num_heads": 2, "lr": 1e-5}
    if kind == "in_state_dict":
        state["head.bias"] = _payload("reduce", marker)
    else:
        hparams["payload"] = _payload(kind.replace("_legacy_format", ""), marker)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": hparams}, path,
               _use_new_zipfile_serialization=not kind.endswith("legacy_format"))
    assert not marker.exists()
    torch.load(path, weights_only=False)   # the payload is live: plain unpickling runs it
    assert marker.exists()
    marker.unlink()

    if kind in ("partial", "in_state_dict"):
        # an inert stand-in cannot be called, or is not a tensor: refused, still nothing run
        with pytest.raises(CheckpointError, match="restricted unpickler|not a dict of tensors"):
            convert_released_checkpoint(path, out=tmp_path / "evil")
        assert not (tmp_path / "evil").exists()
    else:
        model = load_model(convert_released_checkpoint(path, out=tmp_path / "evil"))
        assert model.config["num_heads"] == 2
        meta = read_model_config(tmp_path / "evil")["metadata"]
        assert meta["source_hyper_parameters"] == {"num_heads": 2, "lr": 1e-5}
        system = f"{os.system.__module__}.system"
        culprit = {"reduce": system, "reduce_legacy_format": system,
                   "setstate": f"{__name__}._SetStatePayload",
                   "newobj": f"{__name__}._NewPayload"}[kind]
        assert culprit in meta["source_objects_not_imported"]
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archives_are_refused(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_checkpoint(path)


def test_cli_convert_weights(tmp_path, capsys):
    g = torch.Generator().manual_seed(5)
    path = tmp_path / "specformer.ckpt"
    torch.save(lightning_checkpoint(released_specformer_state(g, d=16, layers=1), {}), path)
    # num_heads is not recorded here and the width is not the released one
    assert main(["convert-weights", str(path), "--out", str(tmp_path / "a")]) == 1
    assert "num_heads" in capsys.readouterr().err
    assert main(["convert-weights", str(path), "--out", str(tmp_path / "a"),
                 "--num-heads", "2"]) == 0
    assert load_model(tmp_path / "a").config["num_heads"] == 2
    assert main(["convert-weights", str(path), "--out", str(tmp_path / "a"),
                 "--num-heads", "2"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_checkpoint_saved_on_a_gpu_reads_on_the_cpu(tmp_path):
    """The released files were written from CUDA tensors; they load on a CPU-only machine."""
    import zipfile
    from unittest import mock

    g = torch.Generator().manual_seed(6)
    state = released_specformer_state(g, d=16, layers=1)
    for name, hparams in (("plain", {"num_heads": 2}),
                          ("modules", {"num_heads": 2, "head": MLP(3, (4,), 1)})):
        path = tmp_path / f"{name}.ckpt"
        # what torch.save records for tensors that live on the first GPU
        with mock.patch.object(torch.serialization, "location_tag", lambda storage: "cuda:0"):
            torch.save({"state_dict": state, "hyper_parameters": hparams}, path)
        with zipfile.ZipFile(path) as zf:
            assert b"cuda:0" in zf.read(f"{name}/data.pkl")
        ckpt = read_checkpoint(path)
        assert ckpt.restricted == (name == "modules")
        assert all(v.device.type == "cpu" and torch.equal(v, state[k])
                   for k, v in ckpt.state_dict.items())
