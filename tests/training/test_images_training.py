"""MoCo v2 image pretraining: the loss falls, queue mechanics, exact resume, bad input."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from astroclip.models import factory
from astroclip.models.image import ImageEncoder
from astroclip.training.images import MoCoPretraining, collate_images, moco_loss, pretrain_images

# tiny models: one intra-op thread (the one_thread fixture of tests/conftest.py)
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]

TINY = dict(backbone="resnet", embed_dim=16, crop_size=32,
            backbone_kwargs=dict(layers=(1, 1, 1, 1), width=8, mlp_hidden=32))


class ToyGalaxies(torch.utils.data.Dataset):
    """Round and elongated galaxies of random size, colour and orientation."""

    def __init__(self, n, *, seed=0, size=40):
        rng = np.random.default_rng(seed)
        t = np.arange(size) - size / 2 + 0.5
        yy, xx = np.meshgrid(t, t, indexing="ij")
        imgs = np.empty((n, 3, size, size), np.float32)
        for i in range(n):
            a, q, th = rng.uniform(2, 6), rng.uniform(0.3, 1), rng.uniform(0, np.pi)
            u = xx * np.cos(th) + yy * np.sin(th)
            v = -xx * np.sin(th) + yy * np.cos(th)
            prof = np.exp(-0.5 * (u ** 2 + (v / q) ** 2) / a ** 2)
            col = rng.uniform(0.3, 1.5, size=3)
            imgs[i] = col[:, None, None] * prof + 0.01 * rng.normal(size=(3, size, size))
        self.images = torch.from_numpy(imgs)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i]}


COMMON = dict(preset="resnet-small", model_config=TINY, progress=False, accelerator="cpu",
              queue_size=128, momentum=0.99, batch_size=16, optimizer="adamw", lr=3e-3)


def read_log(run):
    rows = list(csv.DictReader(open(Path(run) / "logs" / "metrics.csv")))
    return ([float(r["train_loss"]) for r in rows if r.get("train_loss")],
            [{k: float(v) for k, v in r.items() if v != ""} for r in rows if r.get("val_loss")])


def test_moco_loss_and_queue():
    q = F.normalize(torch.randn(4, 8), dim=1)
    queue = F.normalize(torch.randn(32, 8), dim=1)
    loss, logits = moco_loss(q, q, queue, temperature=0.2)
    pos = torch.ones(4, 1) / 0.2
    ref = F.cross_entropy(torch.cat([pos, q @ queue.T / 0.2], 1), torch.zeros(4, dtype=torch.long))
    assert torch.allclose(loss, ref, atol=1e-6)
    assert torch.allclose(logits[:, 0], pos[:, 0], atol=1e-5)
    with pytest.raises(ValueError, match="differ in shape"):
        moco_loss(q, q[:3], queue)

    module = MoCoPretraining(TINY, queue_size=10, momentum=0.9)
    assert module.queue.shape == (10, 16)
    assert torch.allclose(module.queue.norm(dim=1), torch.ones(10), atol=1e-5)
    keys = F.normalize(torch.randn(6, 16), dim=1)
    module._enqueue(keys)
    assert torch.equal(module.queue[:6], keys) and int(module.queue_ptr) == 6
    module._enqueue(keys)  # wraps around the end of the queue
    assert torch.equal(module.queue[6:], keys[:4]) and torch.equal(module.queue[:2], keys[4:])
    assert int(module.queue_ptr) == 2
    # the key encoder follows the query encoder by exponential moving average
    with torch.no_grad():
        for p in module.encoder_q.parameters():
            p.add_(1.0)
    k0 = [p.clone() for p in module.encoder_k.parameters()]
    module._momentum_update()
    for p0, pk, pq in zip(k0, module.encoder_k.parameters(), module.encoder_q.parameters()):
        assert torch.allclose(pk, 0.9 * p0 + 0.1 * pq, atol=1e-6)
    assert not any(p.requires_grad for p in module.encoder_k.parameters())


def test_pretraining_learns(tmp_path):
    train, val = ToyGalaxies(256, seed=0), ToyGalaxies(64, seed=1)
    # gentler jitter and blur than the survey defaults: the toy galaxies are small
    enc = pretrain_images(train, val_data=val, out=tmp_path / "moco", max_steps=120,
                          val_every=30, augment_options=dict(max_shift=2, p_blur=0.2),
                          **{**COMMON, "momentum": 0.9})
    _, vl = read_log(tmp_path / "moco")
    assert len(vl) == 4
    assert vl[-1]["val_loss"] < vl[0]["val_loss"] - 0.2
    # one augmented view finds the other among 64 images far above chance (1/64, 5/64)
    assert vl[-1]["val_view_top1"] > 0.1
    assert vl[-1]["val_view_top5"] > 0.4
    again = factory.create_model(tmp_path / "moco")
    assert isinstance(again, ImageEncoder)
    x = val.images[:4]
    with torch.no_grad():
        assert torch.allclose(again(x), enc(x), atol=1e-6)
    # it is directly usable as the image model of the alignment
    from astroclip.training.align import build_clip_model
    model, pre = build_clip_model(preset="small", image_model=tmp_path / "moco",
                                  spectrum_model="small")
    assert pre["image"] and model.embed_dim == 16


class Kill(Callback):
    class Killed(Exception):
        pass

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 3:
            raise self.Killed()


def test_resume_is_exact(tmp_path):
    train = ToyGalaxies(64, seed=2)
    kw = dict(max_steps=6, checkpoint_every=2, seed=1, **COMMON)
    full = pretrain_images(train, out=tmp_path / "full", **kw)
    with pytest.raises(Kill.Killed):
        pretrain_images(train, out=tmp_path / "cut", callbacks=[Kill()], **kw)
    resumed = pretrain_images(train, out=tmp_path / "cut", **kw)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    qa = torch.load(tmp_path / "full" / "last.ckpt", weights_only=True)["state_dict"]["queue"]
    qb = torch.load(tmp_path / "cut" / "last.ckpt", weights_only=True)["state_dict"]["queue"]
    assert torch.equal(qa, qb)


def test_bad_input(tmp_path):
    train = ToyGalaxies(8)
    with pytest.raises(ValueError, match="at least 2"):
        pretrain_images(torch.utils.data.Subset(train, [0]), out=tmp_path / "a",
                        **{**COMMON, "batch_size": 2})
    with pytest.raises(ValueError, match="larger than the training set"):
        pretrain_images(train, out=tmp_path / "b", **COMMON)
    with pytest.raises(ValueError, match="queue_size"):
        pretrain_images(train, out=tmp_path / "c", **{**COMMON, "batch_size": 4,
                                                      "queue_size": 2})
    with pytest.raises(ValueError, match="unknown image model"):
        pretrain_images(train, out=tmp_path / "d", **{**COMMON, "preset": "vgg"})
    with pytest.raises(ValueError, match="'image'"):
        collate_images([{"spectrum": torch.zeros(3)}])
    small = torch.utils.data.TensorDataset(torch.zeros(4, 3, 20, 20))

    class Small(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"image": torch.zeros(3, 20, 20)}

    with pytest.raises(ValueError, match="larger than the 20x20"):
        pretrain_images(Small(), out=tmp_path / "e", max_steps=1, **{**COMMON, "batch_size": 2})
    del small
