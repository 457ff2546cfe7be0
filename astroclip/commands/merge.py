"""``astroclip merge``: join the shard files of a job array into one embeddings file."""

__all__ = ["HELP", "add_arguments", "run"]

HELP = "join shard files (astroclip embed --shard I/N) into one embeddings file, checked"


def add_arguments(parser):
    parser.add_argument("shards", nargs="+", help="the shard files, in any order")
    parser.add_argument("--out", required=True, help="merged file (.h5, .fits or .parquet)")
    parser.add_argument("--overwrite", action="store_true")


def run(args):
    from ..data.embeddings import merge_embeddings

    out = merge_embeddings(args.shards, args.out, overwrite=args.overwrite)
    print(f"wrote {out}")
