"""``astroclip convert-weights``: released checkpoints -> our safetensors + JSON."""

__all__ = ["HELP", "add_arguments", "run"]

HELP = ("Convert a released checkpoint (specformer.ckpt, astroclip.ckpt, astrodino.ckpt) to "
        "our format.")

#: command-line option -> keyword argument of the part converters
_HEAD_OPTIONS = {"num_heads": "num_heads", "image_num_heads": "image_num_heads",
                 "spectrum_num_heads": "spectrum_num_heads"}


def add_arguments(parser):
    parser.add_argument("checkpoint", help="released checkpoint file (read without running any "
                                           "code from it)")
    parser.add_argument("--out", required=True, help="output model folder")
    from ..models.factory import list_models

    parts = sorted(list_models(kind="part")["name"])
    parser.add_argument("--part", default="specformer", choices=parts,
                        help="what to extract (default: specformer): " + "; ".join(
                            f"{row['name']}: {row['description']}"
                            for row in list_models(kind="part")).replace("%", "%%"))
    parser.add_argument("--num-heads", type=int, default=None,
                        help="attention heads of the part's transformer(s), when the "
                             "checkpoint does not record them (part astroclip: both)")
    parser.add_argument("--image-num-heads", type=int, default=None,
                        help="part astroclip: attention heads of the ViT (default width/64)")
    parser.add_argument("--spectrum-num-heads", type=int, default=None,
                        help="part astroclip: attention heads of the spectrum transformer")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model")


def run(args):
    from ..exceptions import AstroclipError, CheckpointError
    from ..models.factory import convert_released_checkpoint

    options = {kw: getattr(args, opt) for opt, kw in _HEAD_OPTIONS.items()
               if getattr(args, opt) is not None}
    try:
        out = convert_released_checkpoint(args.checkpoint, out=args.out, part=args.part,
                                          overwrite=args.overwrite, **options)
    except ValueError as exc:
        if isinstance(exc, AstroclipError):
            raise
        # the converters' checks are ValueErrors: on the command line they are the user's
        raise CheckpointError(f"{args.checkpoint}: {exc}") from exc
    print(f"converted {args.checkpoint} ({args.part}) -> {out}")
