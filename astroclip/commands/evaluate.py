"""``astroclip evaluate``: zero-/few-shot property regression R^2 table."""

__all__ = ["HELP", "add_arguments", "run"]

HELP = "R^2 of k-NN and MLP property estimates from embeddings (the paper's Table 1)"


def add_arguments(parser):
    parser.add_argument("--embeddings", required=True,
                        help="embeddings file written by `astroclip embed`")
    parser.add_argument("--labels", required=True,
                        help="paired HDF5 training-set file with the labels and the split")
    parser.add_argument("--properties", nargs="+", default=["Z", "LOG_MSTAR"],
                        help="label columns to predict")
    parser.add_argument("--k", type=int, default=64, help="neighbours of the k-NN regression")
    parser.add_argument("--test-split", default="test", help="split used for testing")
    parser.add_argument("--out", default=None, help="write the R^2 table (.ecsv)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", action="store_true")


def run(args):
    from .._io import atomic_path, check_output_path
    from ..evaluation import evaluate_embeddings

    table, _, _ = evaluate_embeddings(args.embeddings, args.labels, properties=args.properties,
                                      k=args.k, test_split=args.test_split,
                                      progress=not args.no_progress)
    table.pprint(max_lines=-1, max_width=-1)
    if args.out:
        check_output_path(args.out, overwrite=args.overwrite)
        with atomic_path(args.out) as tmp:
            table.write(tmp, format="ascii.ecsv", overwrite=True)
        print(f"wrote {args.out}")
