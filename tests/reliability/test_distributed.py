"""Issue 17: the Lightning Trainer.predict path (DDP over 2 gloo CPU processes) == one process."""

import os
import subprocess
import sys

import numpy as np
import pytest

import astroclip
from astroclip import api
from astroclip.data.embeddings import read_embeddings

from .conftest import write_pairs

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]

SCRIPT = """\
import sys, warnings
import torch
torch.set_num_threads(1)
warnings.simplefilter("ignore")
import astroclip.distributed as dist
from astroclip.distributed import embed_catalog_distributed
source, out, model = sys.argv[1:4]
real_merge = dist.merge_embeddings


def spy(paths, out, **kwargs):  # rank 0: which chunks each rank's part file holds
    import h5py
    for p in paths:
        with h5py.File(p) as f:
            print("part", p.name, sorted(set(f["chunk"][:].tolist())), len(f["targetid"]))
    return real_merge(paths, out, **kwargs)


dist.merge_embeddings = spy
embed_catalog_distributed(source, out=out, model=model, chunk_size=3, progress=False,
                          accelerator="cpu", devices=2, strategy="ddp", {extra})
print("done", out)
"""


def _run(tmp_path, source, out, model, extra=""):
    script = tmp_path / "ddp_embed.py"
    script.write_text(SCRIPT.format(extra=extra))
    root = os.path.dirname(os.path.dirname(astroclip.__file__))  # this tree's astroclip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    env.pop("LOCAL_RANK", None)
    # torchrun starts both processes at once (Lightning reads its environment); without it
    # Lightning's own launcher would start the second only once the first has imported
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    return subprocess.run([*launcher, str(script), str(source), str(out), str(model)],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_predict_gives_the_rows_of_one_process(tmp_path, model_path):
    # 14 rows in chunks of 3: 5 chunks, 3 on rank 0 and 2 on rank 1 (the predict sampler
    # does not pad: no chunk twice)
    src = write_pairs(tmp_path / "cat.h5", n=14, seed=3)
    ref = api.embed_catalog(src, out=tmp_path / "ref.h5", model=model_path, chunk_size=3,
                            progress=False)
    out = tmp_path / "ddp.h5"
    proc = _run(tmp_path, src, out, model_path, extra="modality='both'")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    (ids, emb, meta), (rids, remb, rmeta) = read_embeddings(out), read_embeddings(ref)
    assert ids.tolist() == rids.tolist() == list(range(100, 114))
    for m in ("spectrum", "image"):
        assert np.array_equal(emb[m], remb[m])
    # both ranks embedded: rank 0 chunks 0, 2, 4 and rank 1 chunks 1, 3 (14 rows, none twice)
    parts = [line.split(" ", 2)[1:] for line in proc.stdout.splitlines()
             if line.startswith("part ")]
    assert parts == [["rank-00000-of-00002.h5", "[0, 2, 4] 8"],
                     ["rank-00001-of-00002.h5", "[1, 3] 6"]]
    assert meta["weights_sha256"] == rmeta["weights_sha256"] and "shard" not in meta
    assert not (tmp_path / "ddp.h5.parts").exists()


def test_lightning_path_resumes_the_chunks_of_an_interrupted_run(tmp_path, model_path,
                                                                 monkeypatch):
    """One Lightning process (the CLI's --lightning) reuses the chunks embed_catalog left."""
    from astroclip.cli import main

    src = write_pairs(tmp_path / "cat.h5", n=10, seed=4)
    ref = api.embed_catalog(src, out=tmp_path / "ref.h5", model=model_path, chunk_size=4,
                            modality="spectrum", progress=False)
    out = tmp_path / "e.h5"
    real, calls = api._run_batches, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "_run_batches", dying)
    with pytest.raises(KeyboardInterrupt):
        api.embed_catalog(src, out=out, model=model_path, chunk_size=4, modality="spectrum",
                          progress=False)
    monkeypatch.setattr(api, "_run_batches", real)
    assert [p.name for p in (tmp_path / "e.h5.parts").glob("chunk_*")] == ["chunk_0000000.npz"]
    seen, embed_chunk = [], api._embed_chunk
    monkeypatch.setattr(api, "_embed_chunk", lambda chunks, i, *a, **k: seen.append(i) or
                        embed_chunk(chunks, i, *a, **k))
    assert main(["embed", str(src), "--out", str(out), "--model", str(model_path),
                 "--modality", "spectrum", "--chunk-size", "4", "--lightning", "--accelerator",
                 "cpu", "--devices", "1", "--no-progress"]) == 0
    assert seen == [1, 2]  # chunk 0 was reused, not embedded again
    assert not (tmp_path / "e.h5.parts").exists()
    (ids, emb, _), (rids, remb, _) = read_embeddings(out), read_embeddings(ref)
    assert np.array_equal(ids, rids) and np.array_equal(emb["spectrum"], remb["spectrum"])
