"""Options shared by several sub-commands."""

__all__ = ["add_runtime_options", "add_run_folder_options", "add_lightning_options",
           "lightning_kwargs", "read_embeddings"]


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
    """Read an `astroclip.embed_catalog` output: (targetid, {modality: array}, meta).

    Raises
    ------
    FileNotFoundError
        No such file.
    DataFileError
        A file that cannot be read (truncated, corrupt, locked).
    InputError
        A readable file that is not an embeddings file.
    """
    from pathlib import Path

    import numpy as np

    from ..exceptions import DataFileError, InputError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; write it with `astroclip embed`")
    if path.suffix.lower() in (".h5", ".hdf5"):
        from ..data.hdf5 import open_hdf5
        with open_hdf5(path) as f:
            if "targetid" not in f:
                raise InputError(f"{path} is not an embeddings file written by "
                                 "`astroclip embed` (no 'targetid')")
            ids = f["targetid"][:]
            emb = {k[:-len("_embedding")]: f[k][:] for k in f if k.endswith("_embedding")}
            meta = dict(f.attrs)
    else:
        from astropy.io.registry import IORegistryError
        from astropy.table import Table
        try:
            t = Table.read(path)
        except (OSError, ValueError, TypeError, IORegistryError) as exc:
            raise DataFileError(f"{path} cannot be read as a table ({str(exc).splitlines()[0]}); "
                                "it is truncated, "
                                "corrupt or not an embeddings file: write it again with "
                                "`astroclip embed`") from None
        if "targetid" not in t.colnames:
            raise InputError(f"{path} is not an embeddings file written by `astroclip embed` "
                             f"(no 'targetid' column; columns: {t.colnames[:10]})")
        ids = np.asarray(t["targetid"])
        emb = {c[:-len("_embedding")]: np.asarray(t[c]) for c in t.colnames
               if c.endswith("_embedding")}
        meta = dict(t.meta)
    if not emb:
        raise InputError(f"{path} holds no '*_embedding' column; write it with `astroclip embed`")
    return ids, emb, meta


def _devices(value):
    """``auto``, a device count, or comma-separated device ids."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        return [int(v) for v in value.split(",")]


def add_run_folder_options(parser):
    """``--data`` and ``--out`` of the training commands."""
    parser.add_argument("--data", required=True,
                        help="paired HDF5 training-set file (train rows train, val rows validate)")
    parser.add_argument("--out", required=True,
                        help="run folder: last.ckpt, logs/, then model.safetensors + config.json")


def add_lightning_options(parser):
    """Options shared by the training commands: seed, data loading, devices, resume."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=0, help="data-loader processes")
    parser.add_argument("--device", default=None,
                        help="one device: cpu, cuda, cuda:1 (overrides --accelerator/--devices)")
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator")
    parser.add_argument("--devices", type=_devices, default="auto",
                        help="number of devices per node or comma-separated ids")
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    parser.add_argument("--precision", default=None,
                        help="Lightning precision (default: bf16-mixed on GPU, 32-true on CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-resume", action="store_true",
                        help="do not continue from OUT/last.ckpt")
    parser.add_argument("--overwrite", action="store_true", help="start over in OUT")


def lightning_kwargs(args):
    """The keyword arguments of the training functions set by `add_lightning_options`."""
    return dict(seed=args.seed, num_workers=args.num_workers, device=args.device,
                accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes,
                strategy=args.strategy, precision=args.precision,
                progress=not args.no_progress, resume=not args.no_resume,
                overwrite=args.overwrite)
