"""Issue 17: job-array shards of embed_catalog and their checked merge; streaming DESI coadds."""

import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from astroclip import api
from astroclip.cli import main
from astroclip.data.embeddings import merge_embeddings, read_embeddings
from astroclip.exceptions import InputError, MergeError, ResumeMismatchError

from .conftest import shipped_desi_coadds, write_mock_coadd

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def coadds(tmp_path_factory):
    """The four shipped DESI coadds plus two mock coadd files, in a fixed order."""
    folder = tmp_path_factory.mktemp("coadds")
    mocks = [write_mock_coadd(folder / f"coadd-mock-{k}.fits", n=3 + k, seed=k,
                              first_id=9000 + 100 * k) for k in range(2)]
    return shipped_desi_coadds() + mocks


def _same(a, b):
    (ids, emb, meta), (rids, remb, rmeta) = read_embeddings(a), read_embeddings(b)
    assert np.array_equal(ids, rids)
    assert sorted(emb) == sorted(remb)
    for m in remb:
        assert np.array_equal(emb[m], remb[m])
    for key in ("model", "weights_sha256", "modality"):
        assert meta[key] == rmeta[key]
    return ids, emb, meta


def _shards(source, tmp, model, n, *, suffix="h5", **kwargs):
    return [api.embed_catalog(source, out=tmp / f"shard-{i}.{suffix}", model=model,
                              progress=False, shard=(i, n), **kwargs) for i in range(n)]


def test_three_shards_of_desi_coadds_merge_to_the_single_process_run(tmp_path, model_path, coadds):
    ref = api.embed_catalog(coadds, out=tmp_path / "ref.h5", modality="spectrum",
                            model=model_path, progress=False)
    shards = _shards(coadds, tmp_path, model_path, 3, modality="spectrum")
    # contiguous blocks of chunks (one chunk per file): 2 files per shard, in input order
    chunks = [h5py.File(s)["chunk"][:] for s in shards]
    assert [sorted(set(c.tolist())) for c in chunks] == [[0, 1], [2, 3], [4, 5]]
    merged = merge_embeddings(shards[::-1], tmp_path / "merged.h5")  # any order given
    ids, emb, meta = _same(merged, ref)
    assert len(ids) == 5 + 5 + 1 + 1 + 3 + 4 and ids[-4:].tolist() == [9100, 9101, 9102, 9103]
    assert "shard" not in meta and "n_chunks" not in meta
    ref_flags = h5py.File(ref)
    with h5py.File(merged) as f:
        assert np.array_equal(f["valid"][:], ref_flags["valid"][:])
        assert f["problem"].asstr()[:].tolist() == ref_flags["problem"].asstr()[:].tolist()
        assert "chunk" not in f


def test_directory_and_glob_sources_are_streamed_in_sorted_order(tmp_path, model_path, coadds):
    folder = coadds[-1].parent
    by_dir = api.embed_catalog(folder, out=tmp_path / "dir.h5", modality="spectrum",
                               model=model_path, progress=False)
    by_glob = api.embed_catalog(str(folder / "coadd-mock-*.fits"), out=tmp_path / "glob.h5",
                                modality="spectrum", model=model_path, progress=False)
    by_list = api.embed_catalog(coadds[-2:], out=tmp_path / "list.h5", modality="spectrum",
                                model=model_path, progress=False)
    _same(by_dir, by_list)
    _same(by_glob, by_list)


def test_shards_of_a_paired_file_merge_in_any_container(tmp_path, model_path, pairs_path):
    ref = api.embed_catalog(pairs_path, out=tmp_path / "ref.h5", model=model_path,
                            chunk_size=2, progress=False)
    shards = _shards(pairs_path, tmp_path, model_path, 4, suffix="fits", chunk_size=2)
    assert [len(read_embeddings(s)[0]) for s in shards] == [2, 4, 2, 4]  # 6 chunks of 2
    _same(merge_embeddings(shards, tmp_path / "merged.h5"), ref)
    _same(merge_embeddings(shards, tmp_path / "merged.fits"), ref)


def test_merge_errors_name_the_problem(tmp_path, model_path, other_model_path, pairs_path):
    kw = dict(chunk_size=3, modality="spectrum")
    shards = _shards(pairs_path, tmp_path, model_path, 3, **kw)
    out = tmp_path / "m.h5"
    with pytest.raises(MergeError, match=r"shard 1 of 3 is missing .*--shard 1/3"):
        merge_embeddings([shards[0], shards[2]], out)
    with pytest.raises(MergeError, match="shard 2/3 is given twice"):
        merge_embeddings(shards + [shards[2]], out)
    other = api.embed_catalog(pairs_path, out=tmp_path / "other-1.h5", model=other_model_path,
                              progress=False, shard=(1, 3), **kw)
    with pytest.raises(MergeError, match=r"model weights \(sha256\) differ"):
        merge_embeddings([shards[0], other, shards[2]], out)
    options = api.embed_catalog(pairs_path, out=tmp_path / "opt-1.h5", model=model_path,
                                progress=False, shard=(1, 3), chunk_size=4, modality="spectrum")
    with pytest.raises(MergeError, match="chunk_size differ"):
        merge_embeddings([shards[0], options, shards[2]], out)
    four = api.embed_catalog(pairs_path, out=tmp_path / "four-1.h5", model=model_path,
                             progress=False, shard=(1, 4), **kw)
    with pytest.raises(MergeError, match="different shard counts"):
        merge_embeddings([shards[0], four, shards[2]], out)
    single = api.embed_catalog(pairs_path, out=tmp_path / "single.h5", model=model_path,
                               progress=False, **kw)
    with pytest.raises(MergeError, match="not a shard file"):
        merge_embeddings([single], out)
    # a shard file that lost rows (chunk 0 dropped): rows missing
    with h5py.File(shards[0], "a") as f:
        keep = f["chunk"][:] != 0
        for name in list(f):
            data = f[name][:]
            del f[name]
            f.create_dataset(name, data=data[keep])
    with pytest.raises(MergeError, match=r"rows missing: chunk\(s\) 0 of 4"):
        merge_embeddings(shards, out)
    with pytest.raises(FileNotFoundError, match="shard file"):
        merge_embeddings([tmp_path / "nope.h5"], out)
    assert not out.exists()


@pytest.mark.parametrize("shard, match", [((3, 3), "0 <= i < n"), ("1-3", "'i/n'"),
                                          ((0, 0), "n >= 1"), ((0, 9), "holds no rows")])
def test_bad_shards_are_refused(tmp_path, model_path, pairs_path, shard, match):
    with pytest.raises(InputError, match=match):
        api.embed_catalog(pairs_path, out=tmp_path / "e.h5", model=model_path, progress=False,
                          shard=shard, chunk_size=4, modality="spectrum")


def test_a_shard_never_resumes_into_the_parts_of_another(tmp_path, model_path, pairs_path,
                                                         monkeypatch):
    out = tmp_path / "e.h5"
    real = api._run_batches
    monkeypatch.setattr(api, "_run_batches", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt) if len(list((tmp_path / "e.h5.parts").glob("chunk_*"))) else
        real(*a, **k))
    with pytest.raises(KeyboardInterrupt):
        api.embed_catalog(pairs_path, out=out, model=model_path, progress=False, shard=(0, 2),
                          chunk_size=2, modality="spectrum")
    monkeypatch.undo()
    with pytest.raises(ResumeMismatchError, match=r"shard: earlier \[0, 2\], now \[1, 2\]"):
        api.embed_catalog(pairs_path, out=out, model=model_path, progress=False, shard=(1, 2),
                          chunk_size=2, modality="spectrum")


def test_killed_shard_resumes_and_the_merge_is_unchanged(tmp_path, model_path, coadds):
    """A shard killed by SIGKILL mid-run, run again, gives the bytes of an uninterrupted run."""
    files = [str(p) for p in coadds]
    out = tmp_path / "shard-1.h5"
    script = ("import torch; torch.set_num_threads(1)\n"
              "import warnings; warnings.simplefilter('ignore')\n"
              "from astroclip import api\n"
              "real, calls = api._run_batches, []\n"
              "def dying(*a, **k):\n"
              "    calls.append(1)\n"
              "    if len(calls) > 1:\n"
              "        import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n"
              "    return real(*a, **k)\n"
              "api._run_batches = dying\n"
              f"api.embed_catalog({files!r}, out={str(out)!r}, model={str(model_path)!r},"
              " modality='spectrum', progress=False, shard=(1, 3))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert [p.name for p in (tmp_path / "shard-1.h5.parts").glob("chunk_*.npz")] == \
        ["chunk_0000002.npz"]
    assert not out.exists()
    # resumed through the command line, the others run afresh
    assert main(["embed", *files, "--out", str(out), "--model", str(model_path), "--shard", "1/3",
                 "--no-progress"]) == 0
    others = [api.embed_catalog(files, out=tmp_path / f"shard-{i}.h5", model=model_path,
                                modality="spectrum", progress=False, shard=(i, 3)) for i in (0, 2)]
    merged = tmp_path / "merged.h5"
    assert main(["merge", str(others[0]), str(out), str(others[1]), "--out", str(merged)]) == 0
    ref = api.embed_catalog(files, out=tmp_path / "ref.h5", modality="spectrum",
                            model=model_path, progress=False)
    _same(merged, ref)


def _hand_made_shards(folder, layout, *, rows=10, chunk_size=4):
    """Shard files written directly: ``layout[i]`` = the chunks of shard i (may be empty)."""
    from astroclip.data.embeddings import shard_meta, write_embeddings

    n_chunks = -(-rows // chunk_size)
    made_by = {"model": {"weights_sha256": "a" * 64, "config_sha256": "b" * 64},
               "modalities": ["spectrum"], "chunk_size": chunk_size, "n_chunks": n_chunks,
               "input": {"kind": "memory", "rows": rows, "sha256": "c"}, "options": {}}
    paths = []
    for i, chunks in enumerate(layout):
        ids = np.concatenate([np.arange(c * chunk_size, min((c + 1) * chunk_size, rows))
                              for c in chunks] or [np.zeros(0, np.int64)])
        emb = np.tile(ids[:, None].astype(np.float32), (1, 3))
        paths.append(write_embeddings(
            folder / f"part-{i}.h5", ids, {"spectrum": emb} if len(ids) else {"spectrum": []},
            valid=ids % 2 == 0, problem=np.where(ids % 2 == 0, "", "odd"),
            meta={"model": "m", "weights_sha256": "a" * 64, "modality": "spectrum",
                  **shard_meta(made_by, (i, len(layout)), input_rows=rows)},
            chunk=ids // chunk_size))
    return paths


def test_merge_of_interleaved_and_empty_parts(tmp_path):
    """Per-rank parts hold interleaved chunks (rank r: r, r + w, ...); a rank may hold none."""
    parts = _hand_made_shards(tmp_path, [[0, 2], [1], []])
    out = merge_embeddings(parts, tmp_path / "merged.h5")
    ids, emb, _ = read_embeddings(out)
    assert ids.tolist() == list(range(10))
    assert emb["spectrum"][:, 0].tolist() == list(range(10))
    with h5py.File(out) as f:
        assert f["valid"][:].tolist() == [i % 2 == 0 for i in range(10)]
    with pytest.raises(MergeError, match="duplicate rows: chunk 2"):
        merge_embeddings(_hand_made_shards(tmp_path, [[0, 2], [1, 2], []]), tmp_path / "d.h5")


def test_cli_refuses_shard_with_lightning(tmp_path, pairs_path, capsys):
    assert main(["embed", str(pairs_path), "--out", str(tmp_path / "e.h5"), "--shard", "0/2",
                 "--lightning", "--no-progress"]) == 1
    assert "--shard and --lightning do not go together" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "none-0.h5"), "--out", str(tmp_path / "m.h5")]) == 1
    assert "run its shard" in capsys.readouterr().err
