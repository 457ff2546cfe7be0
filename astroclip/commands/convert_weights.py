"""``astroclip convert-weights``: released Lightning checkpoints -> our safetensors + JSON."""

__all__ = ["HELP", "add_arguments", "run"]

HELP = "Convert a released AstroCLIP checkpoint (specformer.ckpt, astroclip.ckpt) to our format."


def add_arguments(parser):
    parser.add_argument("checkpoint", help="released checkpoint file (never unpickled with code)")
    parser.add_argument("--out", required=True, help="output model folder")
    parser.add_argument("--part", default="specformer",
                        help="what to extract: specformer, astroclip-spectrum, or a part "
                             "registered by other models (default: specformer)")
    parser.add_argument("--num-heads", type=int, default=None,
                        help="attention heads, when the checkpoint does not record them")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model")


def run(args):
    from ..exceptions import AstroclipError, CheckpointError
    from ..models.weights import convert_released_checkpoint

    options = {} if args.num_heads is None else {"num_heads": args.num_heads}
    try:
        out = convert_released_checkpoint(args.checkpoint, out=args.out, part=args.part,
                                          overwrite=args.overwrite, **options)
    except ValueError as exc:
        if isinstance(exc, AstroclipError):
            raise
        # the converters' checks are ValueErrors: on the command line they are the user's
        raise CheckpointError(f"{args.checkpoint}: {exc}") from exc
    print(f"converted {args.checkpoint} ({args.part}) -> {out}")
