"""FAISS-backed similarity search over AstroCLIP embeddings.

Image and spectrum embeddings of an aligned AstroCLIP model live in one shared
space, so the same index answers in-modal queries (image -> image, spectrum ->
spectrum) and cross-modal ones (image -> spectrum, spectrum -> image).  The
similarity of the paper (its equation 2) is the cosine similarity, i.e. the inner
product of L2-normalised vectors; by default the index is exact
(`faiss.IndexFlatIP` on normalised vectors).  For tens of millions of objects an
inverted-file index (`faiss.IndexIVFFlat`, trained on a sample) trades a little
recall for a large speed-up, and the product-quantised inverted file
(`faiss.IndexIVFPQ`, ``kind="ivfpq"``) also compresses every vector to ``m *
nbits / 8`` bytes, so that hundreds of millions fit in memory; a saved IVF index
can be memory-mapped (``SimilarityIndex.load(path, mmap=True)``: the inverted
lists stay on disk).  FAISS' GPU build is used when it sees a GPU
(``device="auto"``), the CPU otherwise.

One `SimilarityIndex` can hold several *stores*, one per modality (for example the
spectrum and the image embeddings of the same catalogue), each with its own int64
identifiers (TARGETID, say).
"""

import json
import math
import warnings
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from ._arrays import as_embeddings, as_float_array, normalize_rows
from ._io import atomic_path, check_output_path
from ._optional import require
from ._progress import progress_bar
from .exceptions import DataFileError, InputError

faiss = require("faiss", purpose="similarity search and k-NN estimates")

__all__ = ["SimilarityIndex", "cross_modal_search", "METRICS", "KINDS"]

#: Supported metrics: name -> (faiss metric, normalise vectors, score column name).
METRICS = {
    "cosine": (faiss.METRIC_INNER_PRODUCT, True, "similarity"),
    "inner_product": (faiss.METRIC_INNER_PRODUCT, False, "similarity"),
    "l2": (faiss.METRIC_L2, False, "distance"),
}
#: Supported index kinds.
KINDS = ("flat", "ivf", "ivfpq")
#: The kinds with inverted lists (clusters, ``nlist`` and ``nprobe``; trained on a sample).
_IVF_KINDS = ("ivf", "ivfpq")

_FORMAT = "astroclip-similarity-index"
_FORMAT_VERSION = 1
_MANIFEST = "index.json"


# ----------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------

def _rows(embeddings):
    """``(embeddings, shape)`` of a 2-D row source; lists and Quantities become arrays.

    Anything with a ``shape`` (ndarray, `h5py.Dataset`) is kept as it is, so
    that large on-disk arrays are read chunk by chunk later.
    """
    shape = getattr(embeddings, "shape", None)
    if shape is None:
        embeddings = as_float_array(embeddings, name="embeddings")
        shape = embeddings.shape
    if len(shape) != 2:
        raise InputError(f"embeddings must be a 2-D array of shape (n_objects, dim); "
                         f"got shape {tuple(shape)}")
    return embeddings, shape


def _as_ids(ids, n, *, name="ids"):
    arr = np.asarray(ids)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputError(f"{name} must be a 1-D sequence with one identifier per "
                         f"embedding ({n}); got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise InputError(f"{name} must be integers (e.g. TARGETID); got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise InputError(f"{name} do not fit in int64")
    return arr.astype(np.int64)


# ----------------------------------------------------------------------------
# the index
# ----------------------------------------------------------------------------

class _Store:
    """One modality's embeddings: a faiss index and its identifiers."""

    def __init__(self, index):
        self.index = index
        self._ids = []
        self._ids_cache = np.empty(0, dtype=np.int64)

    @property
    def ntotal(self):
        return int(self.index.ntotal)

    @property
    def ids(self):
        if self._ids:
            if len(self._ids) == 1 and not self._ids_cache.size:
                self._ids_cache = self._ids[0]  # kept as given (a memory map stays one)
            else:
                self._ids_cache = np.concatenate([self._ids_cache, *self._ids])
            self._ids = []
        return self._ids_cache

    def append_ids(self, ids):
        self._ids.append(ids)

    def truncate_ids(self, n):
        self._ids_cache = self.ids[:n].copy()


class SimilarityIndex:
    """Nearest-neighbour index over embeddings, in-modal and cross-modal.

    Parameters
    ----------
    embeddings : array-like (N, D), optional
        Embeddings to index right away (float; any array-like that can be
        sliced in rows, e.g. an `h5py.Dataset`, is read chunk by chunk).  Leave
        out to build an empty index and `add` chunks later (then give ``dim``).
    ids : array-like of int (N,), optional
        One int64 identifier per embedding (e.g. TARGETID).  Default: the row
        number, counted across all additions to the same modality.
    modality : str, optional
        Name of the modality these embeddings come from (``"spectrum"``,
        ``"image"``, ...).  Later `add` calls may store other modalities in the
        same index; searches pick the stored modality with ``modality=``.
    metric : {"cosine", "inner_product", "l2"}, optional
        ``"cosine"`` (default, the paper's equation 2): exact inner product of
        L2-normalised vectors; ``"inner_product"``: raw inner product;
        ``"l2"``: Euclidean distance (smaller is closer).
    kind : {"flat", "ivf", "ivfpq"}, optional
        ``"flat"`` (default): exact, brute-force search (`faiss.IndexFlatIP` /
        `faiss.IndexFlatL2`).  ``"ivf"``: approximate inverted-file index
        (`faiss.IndexIVFFlat`), for tens of millions of objects.  ``"ivfpq"``:
        inverted file with product-quantised vectors (`faiss.IndexIVFPQ`), for
        hundreds of millions: ``m * nbits / 8`` bytes per vector (see Notes).
    nlist : int, optional
        IVF kinds only: number of clusters.  Default: ``sqrt(N)`` of the
        embeddings given here (at most N / 39), required when the index starts
        empty.
    nprobe : int, optional
        IVF kinds only: clusters visited per query (recall/speed trade-off; can
        be changed later through the attribute).  Default ``max(1, nlist // 32)``.
    m : int, optional
        ``"ivfpq"`` only: sub-quantisers per vector (a divisor of the
        dimension).  Default: ``dim // 4`` rounded down to a divisor (32 for
        128-d embeddings).
    nbits : int, optional
        ``"ivfpq"`` only: bits per sub-quantiser code (default 8; training needs
        at least ``2 ** nbits`` embeddings, ideally ``39 * 2 ** nbits``).
    train_size : int, optional
        IVF kinds only: number of embeddings sampled to train the clusters (and
        the product quantiser) (default ``min(N, max(64 * nlist, 39 * 2 **
        nbits))``).
    device : str, optional
        ``"auto"`` (default): FAISS on the GPU when FAISS' GPU build sees one
        (``faiss.get_num_gpus() > 0``), otherwise the CPU; ``"cpu"``; ``"cuda"``
        or ``"cuda:N"`` (an error without a FAISS GPU).  Results agree within
        the recall of the approximate kinds; saved files are always CPU indexes.
    dim : int, optional
        Embedding dimension, needed only when ``embeddings`` is not given.
    chunk_size : int, optional
        Rows added per chunk (memory use is a few times ``chunk_size * D * 4`` bytes).
    seed : int, optional
        Seed of the IVF training sample.
    progress : bool, optional
        Show a progress bar while adding many chunks (default: ``conf.progress``).

    Notes
    -----
    Memory per vector: the exact and ``"ivf"`` indexes store the vectors in
    float32 (``4 * D`` bytes each, plus 8 bytes of inverted-list id for
    ``"ivf"``): 10 million 128-d embeddings take 5 GB.  ``"ivfpq"`` stores
    ``m * nbits / 8`` bytes of code plus an 8-byte inverted-list id: 40 bytes
    for ``m=32, nbits=8``, 400 MB for 10 million (13x less than float32 128-d).
    Every kind adds 8 bytes per vector for the identifiers, kept in a numpy
    array beside the faiss index (memory-mapped with ``load(mmap=True)``);
    results report both the row number (``neighbour_index``) and the
    identifier (``neighbour_id``).  The recall of the approximate kinds against
    the exact search is measured in ``benchmarks/bench_search.py``.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.search import SimilarityIndex
    >>> rng = np.random.default_rng(0)
    >>> spectra = rng.normal(size=(100, 16)).astype("float32")
    >>> index = SimilarityIndex(spectra, ids=np.arange(1000, 1100), modality="spectrum")
    >>> result = index.search(spectra[:2], k=3, query_ids=[1000, 1001])
    >>> result["neighbour_id"][result["rank"] == 1].tolist()  # each query finds itself
    [1000, 1001]
    >>> images = spectra + 0.1 * rng.normal(size=spectra.shape).astype("float32")
    >>> index.add(images, ids=np.arange(1000, 1100), modality="image")
    >>> hits = index.search(spectra[:1], k=1, modality="image", query_modality="spectrum")
    >>> int(hits["neighbour_id"][0]), bool(hits.meta["cross_modal"])
    (1000, True)
    """

    def __init__(self, embeddings=None, *, ids=None, modality="spectrum", metric="cosine",
                 kind="flat", nlist=None, nprobe=None, m=None, nbits=None, train_size=None,
                 dim=None, chunk_size=100_000, seed=0, device="auto", progress=None):
        if metric not in METRICS:
            raise InputError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)}")
        if kind not in KINDS:
            raise InputError(f"unknown index kind {kind!r}; choose one of {list(KINDS)}")
        if chunk_size is None or int(chunk_size) < 1:
            raise InputError(f"chunk_size must be a positive integer; got {chunk_size!r}")
        self.metric = metric
        self.kind = kind
        self.chunk_size = int(chunk_size)
        self.seed = seed
        self.progress = progress
        self.default_modality = str(modality)
        self.train_size = train_size
        self._stores = {}
        self.mmap = False
        self._gpu = _faiss_gpu(device)

        n = None
        if embeddings is not None:
            embeddings, shape = _rows(embeddings)
            n, edim = int(shape[0]), int(shape[1])
            if dim is not None and int(dim) != edim:
                raise InputError(f"dim={dim} does not match the embeddings' dimension {edim}")
            dim = edim
        if dim is None:
            raise InputError("give the embeddings to index, or dim= for an empty index")
        self.dim = int(dim)
        if self.dim < 1:
            raise InputError(f"dim must be positive; got {dim}")

        if kind == "ivfpq":
            m = _default_m(self.dim) if m is None else int(m)
            nbits = 8 if nbits is None else int(nbits)
            if m < 1 or self.dim % m:
                raise InputError(f"m={m} must be a positive divisor of the dimension {self.dim} "
                                 f"(each vector is cut into m sub-vectors), e.g. "
                                 f"m={_default_m(self.dim)}")
            if not 1 <= nbits <= 16:
                raise InputError(f"nbits must be between 1 and 16 (8 is usual); got {nbits}")
        elif m is not None or nbits is not None:
            raise InputError("m and nbits apply only to kind='ivfpq'")
        self.m, self.nbits = m, nbits
        if kind in _IVF_KINDS:
            if nlist is None:
                if not n:
                    raise InputError("an empty IVF index needs nlist= (number of clusters, "
                                     "typically sqrt(N) to 16 sqrt(N) for N objects)")
                nlist = max(1, min(int(round(math.sqrt(n))), n // 39))
            nlist = int(nlist)
            if nlist < 1:
                raise InputError(f"nlist must be a positive integer; got {nlist}")
            if nprobe is None:
                nprobe = max(1, nlist // 32)
        elif nlist is not None or nprobe is not None:
            raise InputError("nlist and nprobe apply only to kind='ivf' or 'ivfpq'")
        self.nlist = nlist
        self._nprobe = None if nprobe is None else int(nprobe)
        if self._nprobe is not None and self._nprobe < 1:
            raise InputError(f"nprobe must be a positive integer; got {nprobe}")

        if embeddings is not None:
            self.add(embeddings, ids=ids, modality=self.default_modality)
        elif ids is not None:
            raise InputError("ids were given without embeddings")

    # -- properties --------------------------------------------------------

    @property
    def nprobe(self):
        """IVF: number of clusters visited per query (settable)."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value):
        if self.kind not in _IVF_KINDS:
            raise InputError("nprobe applies only to kind='ivf' or 'ivfpq'")
        value = int(value)
        if value < 1:
            raise InputError(f"nprobe must be a positive integer; got {value}")
        self._nprobe = value

    @property
    def modalities(self):
        """Names of the stored modalities, in the order they were added."""
        return tuple(self._stores)

    def ntotal(self, modality=None):
        """Number of embeddings stored for ``modality`` (default: all modalities)."""
        if modality is None:
            return sum(s.ntotal for s in self._stores.values())
        return self._store(modality).ntotal

    def __len__(self):
        return self.ntotal()

    def ids(self, modality=None):
        """The int64 identifiers of a stored modality, in row order."""
        return self._store(self._resolve_modality(modality)).ids.copy()

    def __repr__(self):
        parts = ", ".join(f"{m}: {s.ntotal}" for m, s in self._stores.items()) or "empty"
        extra = (f", nlist={self.nlist}, nprobe={self.nprobe}" if self.kind in _IVF_KINDS
                 else "") + (f", m={self.m}, nbits={self.nbits}" if self.kind == "ivfpq" else "")
        return (f"<SimilarityIndex dim={self.dim} metric={self.metric!r} kind={self.kind!r}"
                f"{extra} ({parts})>")

    # -- building ------------------------------------------------------------

    def _new_faiss_index(self):
        fmetric = METRICS[self.metric][0]
        if self.kind == "flat":
            return (faiss.IndexFlatIP(self.dim) if fmetric == faiss.METRIC_INNER_PRODUCT
                    else faiss.IndexFlatL2(self.dim))
        quantizer = (faiss.IndexFlatIP(self.dim) if fmetric == faiss.METRIC_INNER_PRODUCT
                     else faiss.IndexFlatL2(self.dim))
        # faiss' python wrapper keeps the quantizer alive with the index
        if self.kind == "ivfpq":
            index = faiss.IndexIVFPQ(quantizer, self.dim, self.nlist, self.m, self.nbits,
                                     fmetric)
        else:
            index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, fmetric)
        return _to_gpu(index, self._gpu)

    def _store(self, modality, *, create=False):
        if modality not in self._stores:
            if not create:
                raise KeyError(f"this index holds no {modality!r} embeddings (it holds "
                               f"{list(self._stores) or 'nothing'}); add them with "
                               f"index.add(embeddings, modality={modality!r})")
            self._stores[modality] = _Store(self._new_faiss_index())
        return self._stores[modality]

    def _resolve_modality(self, modality):
        if modality is not None:
            return str(modality)
        if len(self._stores) == 1:
            return next(iter(self._stores))
        if not self._stores:
            return self.default_modality
        raise InputError(f"this index holds several modalities {list(self._stores)}; "
                         "say which one to use with modality=")

    def _prepare(self, block, *, name, offset=0):
        x = as_embeddings(block, name=name, dim=self.dim, offset=offset)
        if METRICS[self.metric][1]:
            x = normalize_rows(x, name=name, offset=offset)
        return x

    def train(self, sample, *, modality=None):
        """Train the IVF clusters of one modality on a sample of embeddings.

        Needed only for an empty IVF index before the first `add` (otherwise the
        first chunk added is used).  The sample should hold at least ``39 *
        nlist`` embeddings drawn from the whole data set.
        """
        if self.kind not in _IVF_KINDS:
            raise InputError("only kind='ivf' and 'ivfpq' indexes need training")
        modality = str(modality) if modality is not None else self.default_modality
        store = self._store(modality, create=True)
        if store.index.is_trained:
            raise InputError(f"the {modality!r} store is already trained; build a new "
                             "index to retrain")
        x = self._prepare(sample, name="training sample")
        self._check_training(x.shape[0])
        store.index.train(x)

    def _check_training(self, n):
        if n < self.nlist:
            raise InputError(f"the training sample has {n} embeddings, fewer than "
                             f"nlist={self.nlist} clusters; give a larger sample (ideally "
                             f">= {39 * self.nlist}) or a smaller nlist")
        if self.kind == "ivfpq" and n < 2 ** self.nbits:
            raise InputError(f"the training sample has {n} embeddings, fewer than the "
                             f"2**nbits = {2 ** self.nbits} codes of each product quantiser; "
                             f"give a larger sample (ideally >= {39 * 2 ** self.nbits}) or a "
                             "smaller nbits")

    def _default_train_size(self, n):
        if self.train_size is not None:
            return min(n, int(self.train_size))
        pq = 39 * 2 ** self.nbits if self.kind == "ivfpq" else 0
        return min(n, max(64 * self.nlist, pq))

    def add(self, embeddings, *, ids=None, modality=None):
        """Add embeddings (in chunks) to the store of one modality.

        Parameters
        ----------
        embeddings : array-like (N, D)
            New embeddings (any array-like sliceable by rows, e.g. `h5py.Dataset`).
        ids : array-like of int (N,), optional
            Their identifiers; default: continuing row numbers of this modality.
        modality : str, optional
            Store to add to (created if new); default: the index's ``modality``.
        """
        modality = str(modality) if modality is not None else self.default_modality
        if self.mmap:
            raise InputError("this index was loaded memory-mapped (load(path, mmap=True)), "
                             "which is read-only; load it with mmap=False to add embeddings")
        embeddings, shape = _rows(embeddings)
        n = int(shape[0])
        if int(shape[1]) != self.dim:
            raise InputError(f"embeddings have dimension {shape[1]}, but the index holds "
                             f"{self.dim}-dimensional embeddings; embed both with the same "
                             "model (all embeddings in one index must share one space)")
        new = modality not in self._stores
        store = self._store(modality, create=True)
        n0 = store.ntotal
        try:
            if ids is None:
                ids = np.arange(store.ntotal, store.ntotal + n, dtype=np.int64)
            else:
                ids = _as_ids(ids, n)
            if self.kind in _IVF_KINDS and not store.index.is_trained:
                if n < self.nlist:
                    raise InputError(
                        f"cannot train the IVF index: {n} embeddings for nlist={self.nlist} "
                        f"clusters; call index.train(sample) with >= {39 * self.nlist} "
                        "embeddings first, or use a smaller nlist")
                self._check_training(n)
                m = self._default_train_size(n)
                rng = np.random.default_rng(self.seed)
                rows = np.sort(rng.choice(n, size=m, replace=False)) if m < n else slice(None)
                store.index.train(self._prepare(embeddings[rows], name="embeddings"))
            nchunks = max(1, math.ceil(n / self.chunk_size))
            for start in progress_bar(range(0, n, self.chunk_size), total=nchunks,
                                      desc=f"indexing {modality}", unit="chunk",
                                      progress=self.progress, min_total=1):
                stop = min(start + self.chunk_size, n)
                x = self._prepare(embeddings[start:stop], name="embeddings", offset=start)
                store.index.add(x)
                store.append_ids(ids[start:stop])
        except BaseException:
            # roll back: an interrupted add leaves the index as it was
            if new:
                del self._stores[modality]
            elif store.ntotal > n0:
                store.index.remove_ids(faiss.IDSelectorRange(n0, store.ntotal))
                store.truncate_ids(n0)
            raise

    # -- searching -----------------------------------------------------------

    def search_arrays(self, queries, *, k=10, modality=None, query_ids=None,
                      exclude_self=False, batch_size=16384, progress=None):
        """Nearest neighbours as arrays: ``(scores, rows)``, each of shape (Q, k).

        ``scores`` are cosine similarities (or inner products, or Euclidean
        distances for ``metric="l2"``), best first; ``rows`` are row numbers in
        the searched store (``index.ids(modality)[rows]`` gives identifiers).
        An approximate (IVF) search that finds fewer than ``k`` neighbours fills
        the rest with row -1 and score NaN.  See `search` for the parameters.
        """
        modality = self._resolve_modality(modality)
        store = self._store(modality)
        k = int(k)
        if k < 1:
            raise InputError(f"k must be a positive integer; got {k}")
        q = as_embeddings(queries, name="queries", dim=self.dim, allow_1d=True)
        nq = q.shape[0]
        if exclude_self:
            if query_ids is None:
                raise InputError("exclude_self=True needs query_ids= (the identifiers of "
                                 "the queries, to recognise them among the neighbours)")
            if k >= store.ntotal:
                raise InputError(f"k={k} with exclude_self needs more than k embeddings, but "
                                 f"the {modality!r} store holds {store.ntotal}; use "
                                 f"k <= {store.ntotal - 1}")
        elif k > store.ntotal:
            raise InputError(f"k={k} is larger than the number of indexed {modality!r} "
                             f"embeddings ({store.ntotal}); use k <= {store.ntotal}")
        if query_ids is not None:
            query_ids = _as_ids(query_ids, nq, name="query_ids")
        if METRICS[self.metric][1]:
            q = normalize_rows(q, name="queries")
        if self.kind in _IVF_KINDS:
            _set_nprobe(store.index, self.nprobe)
        kk = k + 1 if exclude_self else k
        scores = np.empty((nq, k), dtype=np.float32)
        rows = np.empty((nq, k), dtype=np.int64)
        batch_size = max(1, int(batch_size))
        nb = max(1, math.ceil(nq / batch_size))
        for start in progress_bar(range(0, nq, batch_size), total=nb,
                                  desc=f"searching {modality}", unit="chunk",
                                  progress=progress if progress is not None else self.progress,
                                  min_total=1):
            stop = min(start + batch_size, nq)
            d, i = store.index.search(q[start:stop], kk)
            if exclude_self:
                all_ids = store.ids
                is_self = (i >= 0) & (all_ids[np.maximum(i, 0)] == query_ids[start:stop, None])
                order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
                d = np.take_along_axis(d, order, axis=1)
                i = np.take_along_axis(i, order, axis=1)
            scores[start:stop] = d
            rows[start:stop] = i
        if self.metric == "l2":
            np.sqrt(np.maximum(scores, 0, out=scores), out=scores)
        scores[rows < 0] = np.nan
        return scores, rows

    def search(self, queries, *, k=10, query_modality=None, modality=None, query_ids=None,
               exclude_self=False, batch_size=16384, progress=None):
        """Find the ``k`` nearest stored embeddings of each query.

        Parameters
        ----------
        queries : array-like (Q, D) or (D,)
            Query embeddings (from any modality of the same AstroCLIP model).
        k : int, optional
            Neighbours per query (at most the number of stored embeddings).
        query_modality : str, optional
            What the queries are (``"image"``, ``"spectrum"``); recorded in the
            result and, when ``modality`` is not given and the index holds
            several modalities, selects the in-modal store.
        modality : str, optional
            Stored modality to search (default: the only one, or
            ``query_modality``).  Searching a store of another modality than the
            queries is a cross-modal search.
        query_ids : array-like of int (Q,), optional
            Identifiers of the queries (default: their row numbers).
        exclude_self : bool, optional
            Drop neighbours whose identifier equals the query's (for queries
            that are themselves in the index, e.g. leave-one-out evaluation).
        batch_size : int, optional
            Queries per faiss call.
        progress : bool, optional
            Progress bar over query batches (default: ``conf.progress``).

        Returns
        -------
        `~astropy.table.Table`
            One row per (query, neighbour), ``Q * k`` rows ordered by query then
            rank, with columns ``query_index``, ``query_id``, ``rank`` (1 = best),
            ``neighbour_index`` (row in the store), ``neighbour_id`` and
            ``similarity`` (cosine similarity; ``distance`` for ``metric="l2"``).
            ``meta`` records the metric, index kind, modalities and ``k``.

        Raises
        ------
        ValueError
            For queries of another dimension than the index, ``k`` larger than the
            store, non-finite queries, or an ambiguous ``modality``.
        """
        if modality is None and query_modality is not None and len(self._stores) > 1:
            if str(query_modality) in self._stores:
                modality = str(query_modality)
        modality = self._resolve_modality(modality)
        scores, rows = self.search_arrays(queries, k=k, modality=modality,
                                          query_ids=query_ids, exclude_self=exclude_self,
                                          batch_size=batch_size, progress=progress)
        nq, k = rows.shape
        qidx = np.repeat(np.arange(nq, dtype=np.int64), k)
        qids = qidx if query_ids is None else np.repeat(_as_ids(query_ids, nq, name="query_ids"), k)
        rank = np.tile(np.arange(1, k + 1, dtype=np.int32), nq)
        flat_rows = rows.ravel()
        flat_scores = scores.ravel()
        found = flat_rows >= 0
        if not found.all():
            missing = int(np.count_nonzero((rows < 0).any(axis=1)))
            warnings.warn(f"{missing} queries got fewer than k={k} neighbours from the "
                          f"approximate index (nprobe={self.nprobe}); their missing rows "
                          "are left out of the table. Increase index.nprobe to fix this.",
                          AstropyUserWarning)
        store = self._store(modality)
        neighbour_ids = store.ids[flat_rows[found]]
        score_name = METRICS[self.metric][2]
        table = Table(
            [qidx[found], qids[found], rank[found], flat_rows[found], neighbour_ids,
             flat_scores[found]],
            names=["query_index", "query_id", "rank", "neighbour_index", "neighbour_id",
                   score_name])
        table[score_name].description = {
            "cosine": "cosine similarity (1 = same direction)",
            "inner_product": "inner product",
            "l2": "Euclidean distance"}[self.metric]
        table.meta.update({
            "metric": self.metric, "kind": self.kind, "modality": modality,
            "query_modality": None if query_modality is None else str(query_modality),
            "cross_modal": (query_modality is not None and str(query_modality) != modality),
            "k": int(k), "exclude_self": bool(exclude_self)})
        if self.kind in _IVF_KINDS:
            table.meta.update({"nlist": self.nlist, "nprobe": self.nprobe})
        if self.kind == "ivfpq":
            table.meta.update({"m": self.m, "nbits": self.nbits})
        return table

    # -- persistence ---------------------------------------------------------

    def save(self, path, *, overwrite=False):
        """Save the index to a directory.

        The directory holds ``index.json`` (format, metric, kind, dimension,
        modalities), one ``<modality>.faiss`` file (`faiss.write_index`) and one
        ``<modality>.ids.npy`` per modality.  Every file is written atomically
        and the manifest last.

        Parameters
        ----------
        path : str or path-like
            Directory to write (created).
        overwrite : bool, optional
            Replace an existing saved index.
        """
        path = Path(path)
        if path.exists():
            if not path.is_dir():
                raise FileExistsError(f"{path} exists and is not a directory; an index is "
                                      "saved as a directory: choose another path")
            check_output_path(path / _MANIFEST, overwrite=overwrite)
            if not overwrite and any(path.iterdir()):
                raise FileExistsError(f"{path} is a non-empty directory; choose another path "
                                      "or pass overwrite=True")
        path.mkdir(parents=True, exist_ok=True)
        stores = {}
        for i, (modality, store) in enumerate(self._stores.items()):
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in modality)
            stem = f"{i}-{safe}"
            with atomic_path(path / f"{stem}.faiss") as tmp:
                faiss.write_index(_to_cpu(store.index), str(tmp))
            with atomic_path(path / f"{stem}.ids.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, store.ids, allow_pickle=False)
            stores[modality] = {"ntotal": store.ntotal, "index_file": f"{stem}.faiss",
                                "ids_file": f"{stem}.ids.npy"}
        manifest = {"format": _FORMAT, "format_version": _FORMAT_VERSION,
                    "metric": self.metric, "kind": self.kind, "dim": self.dim,
                    "nlist": self.nlist, "nprobe": self.nprobe, "m": self.m,
                    "nbits": self.nbits, "default_modality": self.default_modality,
                    "stores": stores}
        with atomic_path(path / _MANIFEST) as tmp:
            with open(tmp, "w") as fh:
                json.dump(manifest, fh, indent=2)
        return path

    @classmethod
    def load(cls, path, *, mmap=False, device="auto", progress=None):
        """Read an index written by `save`.

        Parameters
        ----------
        path : str or path-like
            The directory written by `save`.
        mmap : bool, optional
            Memory-map the index files instead of reading them
            (``faiss.read_index`` with ``IO_FLAG_MMAP``; the identifiers with
            ``numpy.load(mmap_mode="r")``): the inverted lists (or flat
            vectors) stay on disk and the operating system pages in what the
            searches touch, so an index larger than memory can be searched.
            Read-only: `add` is refused.  Always on the CPU.
        device : str, optional
            As in `SimilarityIndex` (ignored with ``mmap=True``).
        progress : bool, optional
            Progress bars of later searches.

        Returns
        -------
        `SimilarityIndex`

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from astroclip.search import SimilarityIndex
        >>> x = np.random.default_rng(0).normal(size=(4000, 16)).astype("float32")
        >>> folder = SimilarityIndex(x, kind="ivfpq", nlist=8, m=4, nbits=6).save(
        ...     os.path.join(tempfile.mkdtemp(), "index"))
        >>> index = SimilarityIndex.load(folder, mmap=True)
        >>> index.kind, index.m, index.nbits, len(index)
        ('ivfpq', 4, 6, 4000)
        """
        path = Path(path)
        manifest_path = path / _MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{path} is not a saved SimilarityIndex (no {_MANIFEST} "
                                    "inside); save one with index.save(path)")
        try:
            with open(manifest_path) as fh:
                manifest = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataFileError(f"{manifest_path} is truncated or corrupt (not JSON: {exc}); "
                                "save the index again (index.save)") from None
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
            raise InputError(f"{manifest_path} is not an astroclip similarity index (format "
                             f"{manifest.get('format') if isinstance(manifest, dict) else None!r})"
                             "; save one with index.save(path)")
        if manifest.get("format_version", 0) > _FORMAT_VERSION:
            raise InputError(f"{path} was written by a newer astroclip (format version "
                             f"{manifest['format_version']}); upgrade astroclip to read it")
        self = cls.__new__(cls)
        self.metric = manifest["metric"]
        self.kind = manifest["kind"]
        self.dim = int(manifest["dim"])
        self.nlist = manifest["nlist"]
        self._nprobe = manifest["nprobe"]
        self.m, self.nbits = manifest.get("m"), manifest.get("nbits")
        self.mmap = bool(mmap)
        self._gpu = None if mmap else _faiss_gpu(device)
        self.default_modality = manifest["default_modality"]
        self.chunk_size = 100_000
        self.seed = 0
        self.train_size = None
        self.progress = progress
        self._stores = {}
        for modality, info in manifest["stores"].items():
            index = _read_faiss(path / info["index_file"], mmap=mmap)
            self._check_loaded(index, path / info["index_file"])
            try:
                ids = np.load(path / info["ids_file"], allow_pickle=False,
                              mmap_mode="r" if mmap else None)
            except (ValueError, EOFError, OSError) as exc:
                raise DataFileError(f"{path / info['ids_file']} is truncated or corrupt "
                                    f"({exc}); save the index again (index.save)") from None
            if index.d != self.dim or index.ntotal != info["ntotal"] or ids.shape != (
                    index.ntotal,):
                raise DataFileError(f"{path}: the {modality!r} files are inconsistent with the "
                                    "manifest (interrupted save?); save the index again")
            store = _Store(_to_gpu(index, self._gpu))
            store.append_ids(ids if mmap and ids.dtype == np.int64 else ids.astype(np.int64))
            self._stores[modality] = store
        return self

    def _check_loaded(self, index, file):
        """Refuse an index file whose metric or kind is not the one of the manifest."""
        if self.metric not in METRICS or self.kind not in KINDS:
            raise DataFileError(f"{file.parent / _MANIFEST} names an unknown metric "
                                f"{self.metric!r} or kind {self.kind!r}; save the index again")
        metric = METRICS[self.metric][0]
        if index.metric_type != metric:
            found = {faiss.METRIC_INNER_PRODUCT: "inner product", faiss.METRIC_L2: "L2"}.get(
                index.metric_type, index.metric_type)
            raise DataFileError(f"{file} holds a FAISS index of another metric ({found}) than "
                                f"its manifest says ({self.metric!r}); the files come from "
                                "different saves: save the index again")
        ivf = faiss.try_extract_index_ivf(index)
        found = ("flat" if ivf is None else "ivfpq" if isinstance(faiss.downcast_index(ivf),
                                                                  faiss.IndexIVFPQ)
                 else "ivf")
        if found != self.kind:
            raise DataFileError(f"{file} holds a FAISS index of another kind "
                                f"({found}) than its manifest says "
                                f"({self.kind!r}); the files come from different saves: save "
                                "the index again")


def _read_faiss(file, *, mmap=False):
    """`faiss.read_index` (memory-mapped with ``mmap``) with an error naming the file."""
    if not file.is_file():
        raise DataFileError(f"{file} is missing (interrupted save?); save the index again")
    try:
        if mmap:
            return faiss.read_index(str(file), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        return faiss.read_index(str(file))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise DataFileError(f"{file} is truncated or corrupt (faiss: {first[:200]}); save the "
                            "index again (index.save)") from None


def _default_m(dim):
    """The largest divisor of ``dim`` not above ``dim // 4`` (at least 1)."""
    target = max(1, dim // 4)
    return max(m for m in range(1, target + 1) if dim % m == 0)


def _faiss_gpu(device):
    """The GPU number FAISS should use for ``device`` (None: the CPU)."""
    device = "auto" if device is None else str(device)
    if device == "cpu":
        return None
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if device == "auto":
        return 0 if n_gpus > 0 else None
    if device == "cuda" or device.startswith("cuda:"):
        number = int(device.split(":")[1]) if ":" in device else 0
        if number >= n_gpus:
            from .exceptions import DeviceUnavailableError
            raise DeviceUnavailableError(
                f"device={device!r}: FAISS sees {n_gpus} GPU(s) (faiss.get_num_gpus()); "
                "install FAISS' GPU build (faiss-gpu) or use device='cpu'")
        return number
    raise InputError(f"unknown device {device!r} for FAISS; use 'auto', 'cpu' or 'cuda:N'")


_GPU_RESOURCES = {}


def _to_gpu(index, gpu):
    """``index`` on FAISS GPU ``gpu`` (None: unchanged)."""
    if gpu is None:
        return index
    if gpu not in _GPU_RESOURCES:
        _GPU_RESOURCES[gpu] = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(_GPU_RESOURCES[gpu], gpu, index)


def _to_cpu(index):
    """A CPU copy of a FAISS GPU index (a CPU index unchanged)."""
    if type(index).__name__.startswith("Gpu"):
        return faiss.index_gpu_to_cpu(index)
    return index


def _set_nprobe(index, nprobe):
    """Set ``nprobe`` of a CPU or GPU IVF index."""
    if type(index).__name__.startswith("Gpu"):
        faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", int(nprobe))
    else:
        index.nprobe = int(nprobe)


def cross_modal_search(index, queries, *, query_modality, k=10, query_ids=None, **kwargs):
    """Search the other modality of an index: image queries -> spectra, or vice versa.

    Parameters
    ----------
    index : `SimilarityIndex`
        An index holding the embeddings to search (e.g. image embeddings).
    queries : array-like (Q, D)
        Query embeddings of another modality (e.g. spectrum embeddings) from the
        same aligned model.
    query_modality : str
        Modality of the queries; the index must hold exactly one other modality.
    k, query_ids, **kwargs
        Passed to `SimilarityIndex.search`.

    Returns
    -------
    `~astropy.table.Table`
        As `SimilarityIndex.search`, with ``meta["cross_modal"] = True``.

    Examples
    --------
    >>> import numpy as np
    >>> from astroclip.search import SimilarityIndex, cross_modal_search
    >>> rng = np.random.default_rng(1)
    >>> images = rng.normal(size=(50, 8))
    >>> index = SimilarityIndex(images, modality="image")
    >>> spectra = images[:3] + 0.05 * rng.normal(size=(3, 8))
    >>> hits = cross_modal_search(index, spectra, query_modality="spectrum", k=1)
    >>> hits["neighbour_id"].tolist()
    [0, 1, 2]
    """
    query_modality = str(query_modality)
    others = [m for m in index.modalities if m != query_modality]
    if not others:
        raise InputError(f"the index holds only {query_modality!r} embeddings, so a "
                         f"cross-modal search from {query_modality!r} queries has nothing to "
                         "search; add the other modality with index.add(..., modality=...)")
    if len(others) > 1:
        raise InputError(f"the index holds several other modalities {others}; use "
                         "index.search(queries, modality=..., query_modality=...)")
    return index.search(queries, k=k, query_modality=query_modality, modality=others[0],
                        query_ids=query_ids, **kwargs)
