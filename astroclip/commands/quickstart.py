"""``astroclip quickstart``: the whole pipeline on a mock survey, in one command."""

__all__ = ["HELP", "add_arguments", "run"]

HELP = ("simulate a mock survey, pretrain, align, embed, search and evaluate; "
        "writes a report folder (sized for 15 min on a 2-core CPU)")


def add_arguments(parser):
    from ..quickstart import SIZES

    parser.add_argument("--out", default="quickstart-report", help="report folder")
    parser.add_argument("--size", choices=sorted(SIZES), default="default",
                        help="run size: default (<= 15 min on 2 CPU cores), tiny (seconds, "
                             "for tests), gpu (a larger run for one GPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes simulating the survey (default: all cores)")
    parser.add_argument("--n-galaxies", type=int, default=None, help="override the size")
    parser.add_argument("--spectrum-preset", default=None,
                        help="spectrum transformer preset (default: the size's; e.g. cpu, quick, "
                             "small, paper)")
    parser.add_argument("--image-preset", default=None,
                        help="image encoder preset (default: the size's; e.g. resnet-small, "
                             "vit-small, paper)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args):
    from ..quickstart import quickstart

    overrides = {}
    if args.n_galaxies is not None:
        overrides["n_galaxies"] = args.n_galaxies
    for key in ("spectrum_preset", "image_preset"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    quickstart(args.out, size=args.size, seed=args.seed, device=args.device,
               workers=args.workers, progress=not args.no_progress, **overrides)
