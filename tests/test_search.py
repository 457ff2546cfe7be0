import json

import numpy as np
import pytest
from astropy import units as u
from astropy.table import Table

from astroclip.search import SimilarityIndex, cross_modal_search


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_topk(db, q, k, metric="cosine"):
    if metric == "cosine":
        s = _unit(q.astype(np.float64)) @ _unit(db.astype(np.float64)).T
        order = np.argsort(-s, axis=1)[:, :k]
    elif metric == "inner_product":
        s = q.astype(np.float64) @ db.astype(np.float64).T
        order = np.argsort(-s, axis=1)[:, :k]
    else:
        s = np.sqrt(((q[:, None, :].astype(np.float64) - db[None]) ** 2).sum(-1))
        order = np.argsort(s, axis=1)[:, :k]
    return np.take_along_axis(s, order, axis=1), order


@pytest.mark.parametrize("metric", ["cosine", "inner_product", "l2"])
def test_flat_equals_bruteforce(rng, metric):
    db = rng.normal(size=(500, 24)).astype(np.float32)
    q = rng.normal(size=(40, 24)).astype(np.float32)
    index = SimilarityIndex(db, metric=metric, chunk_size=128, progress=False)
    scores, rows = index.search_arrays(q, k=7)
    ref_scores, ref_rows = _brute_topk(db, q, 7, metric)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-4)


def test_search_table_layout_and_self_match(rng):
    db = rng.normal(size=(300, 16)).astype(np.float32)
    ids = rng.choice(10**15, size=300, replace=False).astype(np.int64) + 39627000000000000
    index = SimilarityIndex(db, ids=ids, modality="spectrum")
    t = index.search(db[10:15], k=4, query_ids=ids[10:15], query_modality="spectrum")
    assert isinstance(t, Table)
    assert t.colnames == ["query_index", "query_id", "rank", "neighbour_index",
                          "neighbour_id", "similarity"]
    assert len(t) == 5 * 4
    assert t["neighbour_id"].dtype == np.int64
    top = t[t["rank"] == 1]
    # the nearest in-modal neighbour of an indexed vector is itself, similarity 1
    np.testing.assert_array_equal(top["neighbour_id"], ids[10:15])
    np.testing.assert_array_equal(top["neighbour_index"], np.arange(10, 15))
    np.testing.assert_allclose(top["similarity"], 1.0, atol=1e-5)
    assert t.meta["cross_modal"] is False and t.meta["modality"] == "spectrum"
    # ranks 1..k in order, similarities decreasing
    np.testing.assert_array_equal(t["rank"][:4], [1, 2, 3, 4])
    assert np.all(np.diff(t["similarity"][:4]) <= 0)
    # neighbour ids agree with the index rows
    np.testing.assert_array_equal(t["neighbour_id"], ids[t["neighbour_index"]])
    # without query_ids the query id is the query row
    t2 = index.search(db[:2], k=1)
    np.testing.assert_array_equal(t2["query_id"], [0, 1])


def test_exclude_self(rng):
    db = rng.normal(size=(200, 8)).astype(np.float32)
    ids = np.arange(200) * 3
    index = SimilarityIndex(db, ids=ids)
    s, r = index.search_arrays(db[:20], k=5, query_ids=ids[:20], exclude_self=True)
    _, ref = _brute_topk(db, db[:20], 6)
    np.testing.assert_array_equal(r, ref[:, 1:])
    with pytest.raises(ValueError, match="query_ids"):
        index.search(db[:2], k=2, exclude_self=True)


def test_chunked_adds_equal_one_add(rng):
    db = rng.normal(size=(1000, 12)).astype(np.float32)
    ids = np.arange(1000) + 7
    one = SimilarityIndex(db, ids=ids)
    many = SimilarityIndex(dim=12)
    for start in range(0, 1000, 300):
        many.add(db[start:start + 300], ids=ids[start:start + 300])
    q = rng.normal(size=(10, 12))
    a, b = one.search(q, k=5), many.search(q, k=5)
    np.testing.assert_array_equal(a["neighbour_id"], b["neighbour_id"])
    np.testing.assert_array_equal(many.ids(), ids)
    # default ids continue across chunks
    cont = SimilarityIndex(db[:10])
    cont.add(db[10:20])
    np.testing.assert_array_equal(cont.ids(), np.arange(20))


def test_cross_modal(rng):
    n = 400
    latent = rng.normal(size=(n, 32))
    spectra = (latent + 0.05 * rng.normal(size=latent.shape)).astype(np.float32)
    images = (latent + 0.05 * rng.normal(size=latent.shape)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) + 1000
    index = SimilarityIndex(spectra, ids=ids, modality="spectrum")
    index.add(images, ids=ids, modality="image")
    assert index.modalities == ("spectrum", "image")
    assert index.ntotal() == 2 * n and index.ntotal("image") == n
    # image queries against the spectrum store
    t = index.search(images[:50], k=3, query_ids=ids[:50], modality="spectrum",
                     query_modality="image")
    assert t.meta["cross_modal"] is True
    top = t[t["rank"] == 1]
    assert np.mean(top["neighbour_id"] == ids[:50]) > 0.95
    # in-modal by query_modality when several stores are present
    t_in = index.search(images[:5], k=1, query_modality="image")
    assert t_in.meta["modality"] == "image"
    np.testing.assert_array_equal(t_in["neighbour_id"], ids[:5])
    # convenience: image index, spectrum queries
    img_index = SimilarityIndex(images, ids=ids, modality="image")
    c = cross_modal_search(img_index, spectra[:50], query_modality="spectrum", k=1)
    assert c.meta["modality"] == "image" and c.meta["query_modality"] == "spectrum"
    ref = _brute_topk(images, spectra[:50], 1)[1][:, 0]
    np.testing.assert_array_equal(c["neighbour_index"], ref)
    with pytest.raises(ValueError, match="only 'image'"):
        cross_modal_search(img_index, images[:2], query_modality="image")
    with pytest.raises(ValueError, match="several modalities"):
        index.search(images[:2], k=1)


def test_ivf_recall_and_training(rng):
    centres = rng.normal(size=(20, 16)) * 3
    db = (centres[rng.integers(0, 20, 4000)] + rng.normal(size=(4000, 16))).astype(np.float32)
    q = (centres[rng.integers(0, 20, 50)] + rng.normal(size=(50, 16))).astype(np.float32)
    index = SimilarityIndex(db, kind="ivf", nlist=16, nprobe=16, chunk_size=1000)
    assert index.nprobe == 16
    # visiting every cluster is exact
    _, rows = index.search_arrays(q, k=10)
    _, ref = _brute_topk(db, q, 10)
    np.testing.assert_array_equal(rows, ref)
    index.nprobe = 2
    _, rows = index.search_arrays(q, k=10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, ref)])
    assert 0.5 < recall <= 1.0
    # empty IVF index: needs nlist, trains on an explicit sample
    with pytest.raises(ValueError, match="nlist"):
        SimilarityIndex(dim=16, kind="ivf")
    empty = SimilarityIndex(dim=16, kind="ivf", nlist=8)
    with pytest.raises(ValueError, match="fewer than nlist"):
        empty.train(db[:4])
    empty.train(db[:1000])
    empty.add(db[:500])
    empty.add(db[500:])
    assert empty.ntotal() == 4000
    with pytest.raises(ValueError, match="only to kind='ivf'"):
        SimilarityIndex(db, nlist=4)


def test_save_load_roundtrip(rng, tmp_path):
    db = rng.normal(size=(300, 8)).astype(np.float32)
    ids = rng.integers(0, 2**62, size=300)
    index = SimilarityIndex(db, ids=ids, modality="image")
    index.add(db[:100] * 2, ids=ids[:100], modality="spectrum")
    path = index.save(tmp_path / "idx")
    manifest = json.loads((path / "index.json").read_text())
    assert manifest["format"] == "astroclip-similarity-index"
    assert set(manifest["stores"]) == {"image", "spectrum"}
    loaded = SimilarityIndex.load(path)
    assert loaded.modalities == index.modalities and loaded.metric == "cosine"
    q = rng.normal(size=(5, 8))
    for m in ("image", "spectrum"):
        a = index.search(q, k=3, modality=m)
        b = loaded.search(q, k=3, modality=m)
        np.testing.assert_array_equal(a["neighbour_id"], b["neighbour_id"])
        np.testing.assert_allclose(a["similarity"], b["similarity"])
    np.testing.assert_array_equal(loaded.ids("image"), ids)
    with pytest.raises(FileExistsError):
        index.save(path)
    index.save(path, overwrite=True)
    with pytest.raises(FileNotFoundError, match="index.json"):
        SimilarityIndex.load(tmp_path)
    # IVF round trip keeps nlist/nprobe
    ivf = SimilarityIndex(rng.normal(size=(2000, 8)), kind="ivf", nlist=10, nprobe=3)
    ivf_loaded = SimilarityIndex.load(ivf.save(tmp_path / "ivf"))
    assert (ivf_loaded.kind, ivf_loaded.nlist, ivf_loaded.nprobe) == ("ivf", 10, 3)
    np.testing.assert_array_equal(ivf.search_arrays(q, k=4)[1],
                                  ivf_loaded.search_arrays(q, k=4)[1])


def test_bad_inputs(rng):
    db = rng.normal(size=(50, 8)).astype(np.float32)
    index = SimilarityIndex(db)
    with pytest.raises(ValueError, match="dimension 9.*8-dimensional"):
        index.search(rng.normal(size=(2, 9)), k=1)
    with pytest.raises(ValueError, match="dimension 4.*8-dimensional"):
        index.add(rng.normal(size=(3, 4)))
    with pytest.raises(ValueError, match="dimension 4.*8-dimensional"):
        index.add(rng.normal(size=(3, 4)), modality="image")
    assert index.modalities == ("spectrum",)
    with pytest.raises(ValueError, match=r"k=51 is larger .* \(50\)"):
        index.search(db[:1], k=51)
    with pytest.raises(ValueError, match="positive"):
        index.search(db[:1], k=0)
    bad = db.copy()
    bad[[3, 7]] = np.nan
    with pytest.raises(ValueError, match=r"2 row\(s\) with NaN.*rows 3, 7"):
        SimilarityIndex(bad)
    with pytest.raises(ValueError, match="NaN"):
        index.search(bad[:5], k=1)
    zero = db.copy()
    zero[4] = 0
    with pytest.raises(ValueError, match="all-zero.*rows 4"):
        SimilarityIndex(zero)
    SimilarityIndex(zero, metric="l2")  # fine for Euclidean distances
    with pytest.raises(ValueError, match="one identifier per"):
        SimilarityIndex(db, ids=np.arange(10))
    with pytest.raises(ValueError, match="integers"):
        SimilarityIndex(db, ids=np.linspace(0, 1, 50))
    with pytest.raises(ValueError, match="unknown metric"):
        SimilarityIndex(db, metric="euclid")
    with pytest.raises(ValueError, match="unknown index kind"):
        SimilarityIndex(db, kind="hnsw")
    with pytest.raises(ValueError, match="unit"):
        SimilarityIndex(db * u.m)
    with pytest.raises(KeyError, match="no 'image' embeddings"):
        index.search(db[:1], k=1, modality="image")
    # a failed add leaves the index unchanged
    more = rng.normal(size=(30, 8)).astype(np.float32)
    more[25] = np.inf
    small = SimilarityIndex(db, chunk_size=10)
    with pytest.raises(ValueError, match="rows 25"):
        small.add(more)
    assert small.ntotal() == 50 and len(small.ids()) == 50
    np.testing.assert_array_equal(small.search_arrays(db[:3], k=1)[1][:, 0], [0, 1, 2])


def _manifold(rng, n, d=16, latent=3):
    """Continuous, clustered embeddings (as real ones are): a smooth map of a low-d latent space."""
    w1 = rng.normal(size=(latent, 64))
    w2 = rng.normal(size=(64, d)) / 8
    z = rng.normal(size=(n, latent))
    return (np.tanh(z @ w1) @ w2 + 0.02 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture
def faiss_one_thread():
    """FAISS' OpenMP threads spin on a loaded 2-core machine: one thread is much faster here."""
    import faiss
    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(n)


def test_ivfpq_recall_memory_and_options(rng, faiss_one_thread):
    x = _manifold(rng, 3050)
    db, q = x[:3000], x[3000:]
    _, ref = _brute_topk(db, q, 10)
    index = SimilarityIndex(db, kind="ivfpq", nlist=8, nprobe=8, m=16, nbits=6)
    assert (index.kind, index.m, index.nbits) == ("ivfpq", 16, 6)
    assert "m=16, nbits=6" in repr(index)
    _, rows = index.search_arrays(q, k=10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, ref)])
    # measured 0.86 with 12 bytes per vector (16 codes of 6 bits) for 64 bytes of float32
    assert recall > 0.7
    ivf = faiss_ivf(index)
    assert ivf.code_size == 16 * 6 // 8  # bytes per vector: m * nbits / 8
    table = index.search(q[:2], k=3)
    assert (table.meta["kind"], table.meta["m"], table.meta["nbits"]) == ("ivfpq", 16, 6)
    # default m: dim // 4 rounded down to a divisor of the dimension
    assert SimilarityIndex(dim=16, kind="ivfpq", nlist=4).m == 4
    assert SimilarityIndex(dim=24, kind="ivfpq", nlist=4).m == 6
    assert SimilarityIndex(dim=20, kind="ivfpq", nlist=4).m == 5


def faiss_ivf(index, modality="spectrum"):
    import faiss
    return faiss.downcast_index(faiss.extract_index_ivf(index._store(modality).index))


def test_ivfpq_save_load_and_mmap_round_trip(rng, tmp_path, faiss_one_thread):
    db = _manifold(rng, 2000)
    index = SimilarityIndex(db, ids=np.arange(2000) + 10**17, kind="ivfpq", nlist=6, nprobe=3,
                            m=4, nbits=5)
    folder = index.save(tmp_path / "pq")
    assert json.loads((folder / "index.json").read_text())["m"] == 4
    scores, rows = index.search_arrays(db[:20], k=5)
    for mmap in (False, True):
        loaded = SimilarityIndex.load(folder, mmap=mmap)
        assert (loaded.kind, loaded.nlist, loaded.nprobe, loaded.m, loaded.nbits) == (
            "ivfpq", 6, 3, 4, 5)
        s2, r2 = loaded.search_arrays(db[:20], k=5)
        np.testing.assert_array_equal(r2, rows)
        np.testing.assert_allclose(s2, scores, rtol=1e-6)
        assert loaded.ids()[:2].tolist() == [10**17, 10**17 + 1]
    assert isinstance(loaded._store("spectrum").ids, np.memmap)  # ids stay on disk too
    with pytest.raises(ValueError, match="memory-mapped"):
        loaded.add(db[:5])
    # a flat index memory-maps as well
    flat = SimilarityIndex.load(SimilarityIndex(db).save(tmp_path / "flat"), mmap=True)
    np.testing.assert_array_equal(flat.search_arrays(db[:3], k=1)[1].ravel(), [0, 1, 2])


def test_ivfpq_errors(rng, faiss_one_thread):
    db = _manifold(rng, 300)
    with pytest.raises(ValueError, match="positive divisor of the dimension 16"):
        SimilarityIndex(db, kind="ivfpq", nlist=4, m=5)
    with pytest.raises(ValueError, match="nbits must be between 1 and 16"):
        SimilarityIndex(db, kind="ivfpq", nlist=4, nbits=20)
    with pytest.raises(ValueError, match="only to kind='ivfpq'"):
        SimilarityIndex(db, kind="ivf", nlist=4, m=4)
    with pytest.raises(ValueError, match=r"2\*\*nbits = 512 codes"):
        SimilarityIndex(db, kind="ivfpq", nlist=4, m=4, nbits=9)
    with pytest.raises(ValueError, match="unknown device"):
        SimilarityIndex(db, device="tpu")
    import faiss

    from astroclip.exceptions import DeviceUnavailableError
    if faiss.get_num_gpus() == 0:
        with pytest.raises(DeviceUnavailableError, match="faiss-gpu"):
            SimilarityIndex(db, device="cuda")
