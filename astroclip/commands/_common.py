"""Options shared by several sub-commands."""

__all__ = ["add_runtime_options", "read_embeddings"]


def add_runtime_options(parser, *, model=True):
    """--model, --device, --batch-size and --no-progress."""
    if model:
        parser.add_argument("--model", default=None,
                            help="model name (see list_models) or model folder; default: "
                                 "astroclip.conf.default_model")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda:N")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def read_embeddings(path):
    """Read an `astroclip.embed_catalog` output: (targetid, {modality: array}, meta)."""
    from pathlib import Path

    import numpy as np

    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        from ..data.hdf5 import open_hdf5
        with open_hdf5(path) as f:
            if "targetid" not in f:
                raise ValueError(f"{path} is not an embeddings file written by "
                                 "`astroclip embed` (no 'targetid')")
            ids = f["targetid"][:]
            emb = {k[:-len("_embedding")]: f[k][:] for k in f if k.endswith("_embedding")}
            meta = dict(f.attrs)
    else:
        from astropy.table import Table
        t = Table.read(path)
        ids = np.asarray(t["targetid"])
        emb = {c[:-len("_embedding")]: np.asarray(t[c]) for c in t.colnames
               if c.endswith("_embedding")}
        meta = dict(t.meta)
    if not emb:
        raise ValueError(f"{path} holds no '*_embedding' column")
    return ids, emb, meta
