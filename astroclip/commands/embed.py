"""``astroclip embed``: embed a catalogue into a file (resumable)."""

__all__ = ["HELP", "add_arguments", "run"]

HELP = "embed spectra and/or images of a catalogue into an HDF5/FITS/Parquet file (resumable)"


def add_arguments(parser):
    parser.add_argument("inputs", nargs="+",
                        help="paired HDF5 training-set file(s), DESI coadd FITS files, or a "
                             "directory or quoted glob of DESI coadd files")
    parser.add_argument("--out", required=True, help="output file (.h5, .fits or .parquet)")
    parser.add_argument("--modality", choices=("both", "spectrum", "image"), default=None,
                        help="default: both for HDF5 inputs, spectrum for DESI files")
    parser.add_argument("--chunk-size", type=int, default=4096, help="rows per resumable chunk")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--restart", action="store_true",
                        help="ignore the chunks of an interrupted run and start afresh")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="embed only shard I (from 0) of N, a contiguous block of chunks "
                             "(job arrays: --shard $SLURM_ARRAY_TASK_ID/N with --array=0-(N-1)); "
                             "OUT is then a shard file: join them with astroclip merge")
    lightning = parser.add_argument_group(
        "several GPUs or nodes (Lightning Trainer.predict; also under torchrun or srun)")
    lightning.add_argument("--lightning", action="store_true",
                           help="embed through Lightning's Trainer.predict with the options below")
    lightning.add_argument("--accelerator", default="auto", help="Lightning accelerator")
    from ..training.options import parse_devices
    from ._common import add_runtime_options
    lightning.add_argument("--devices", type=parse_devices, default="auto",
                           help="devices per node (a count or comma-separated ids)")
    lightning.add_argument("--num-nodes", type=int, default=1)
    lightning.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    lightning.add_argument("--precision", default="32-true",
                           help="Lightning precision (32-true gives the single-process numbers)")
    add_runtime_options(parser)


def run(args):
    from ..api import embed_catalog

    inputs = args.inputs if len(args.inputs) > 1 else args.inputs[0]
    modality = args.modality
    if modality is None:
        hdf5 = all(str(p).lower().endswith((".h5", ".hdf5")) for p in args.inputs)
        modality = "both" if hdf5 else "spectrum"
    common = dict(out=args.out, modality=modality, model=args.model, chunk_size=args.chunk_size,
                  batch_size=args.batch_size, progress=not args.no_progress,
                  overwrite=args.overwrite, resume=not args.restart)
    if args.lightning:
        from ..exceptions import InputError
        if args.shard is not None:
            raise InputError("--shard and --lightning do not go together: a job array shard "
                             "runs one process; Lightning spreads one run over many")
        from ..distributed import embed_catalog_distributed
        out = embed_catalog_distributed(
            inputs, device=None if args.device == "auto" else args.device,
            accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes,
            strategy=args.strategy, precision=args.precision, **common)
    else:
        out = embed_catalog(inputs, device=args.device, shard=args.shard, **common)
    print(f"wrote {out}")
