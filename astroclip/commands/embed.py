"""``astroclip embed``: embed a catalogue into a file (resumable)."""

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
    from ._common import add_runtime_options
    add_runtime_options(parser)


def run(args):
    from ..api import embed_catalog

    inputs = args.inputs if len(args.inputs) > 1 else args.inputs[0]
    modality = args.modality
    if modality is None:
        hdf5 = all(str(p).lower().endswith((".h5", ".hdf5")) for p in args.inputs)
        modality = "both" if hdf5 else "spectrum"
    out = embed_catalog(inputs, out=args.out, modality=modality, model=args.model,
                        chunk_size=args.chunk_size, device=args.device,
                        batch_size=args.batch_size, progress=not args.no_progress,
                        overwrite=args.overwrite, resume=not args.restart, shard=args.shard)
    print(f"wrote {out}")
