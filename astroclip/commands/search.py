"""``astroclip search``: nearest neighbours in an embeddings file, in- or cross-modal."""

__all__ = ["HELP", "add_arguments", "run"]

from ..exceptions import InputError

HELP = "find the nearest neighbours of galaxies in an embeddings file (in- or cross-modal)"


def add_arguments(parser):
    parser.add_argument("--embeddings", required=True,
                        help="database: an embeddings file written by `astroclip embed`")
    parser.add_argument("--modality", default=None,
                        help="modality searched in the database (image or spectrum)")
    parser.add_argument("--query-ids", nargs="+", type=int, default=None,
                        help="TARGETIDs of database galaxies to use as queries")
    parser.add_argument("--queries", default=None,
                        help="another embeddings file whose rows are the queries")
    parser.add_argument("--query-modality", default=None,
                        help="modality of the query embeddings (default: --modality)")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query")
    parser.add_argument("--kind", choices=("flat", "ivf", "ivfpq"), default="flat",
                        help="flat: exact; ivf: inverted file; ivfpq: inverted file with "
                             "product-quantised vectors (dim // 4 bytes each)")
    parser.add_argument("--out", default=None, help="write the neighbour table (.ecsv, .fits)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", action="store_true")


def _weights_sha256(meta):
    """The weights hash recorded by `astroclip.embed_catalog`."""
    return str(meta.get("weights_sha256", "") or "")


def _check_same_model(db_path, db_meta, query_path, query_meta):
    """Refuse to match queries and a database embedded by two different models."""
    a, b = _weights_sha256(db_meta), _weights_sha256(query_meta)
    if a and b and a != b:
        raise InputError(f"the queries {query_path} were embedded by another model (weights "
                         f"sha256 {b}) than the database {db_path} (weights sha256 {a}); their "
                         "embeddings live in different spaces: embed both with one model "
                         "(astroclip embed --model MODEL)")


def run(args):
    import numpy as np

    from .._io import atomic_path, check_output_path
    from ..search import SimilarityIndex
    from ..data.embeddings import read_embeddings

    ids, emb, meta = read_embeddings(args.embeddings)
    modality = args.modality or ("image" if "image" in emb else next(iter(emb)))
    if modality not in emb:
        raise InputError(f"{args.embeddings} holds {sorted(emb)} embeddings, not {modality!r}")
    query_modality = args.query_modality or modality
    if args.queries is not None:
        qids, qemb, qmeta = read_embeddings(args.queries)
        _check_same_model(args.embeddings, meta, args.queries, qmeta)
    elif args.query_ids is not None:
        qids, qemb = ids, emb
    else:
        raise InputError("give the queries: --query-ids ID [ID ...] or --queries FILE")
    if query_modality not in qemb:
        raise InputError(f"the queries have {sorted(qemb)} embeddings, not {query_modality!r}")
    rows = np.arange(len(qids))
    if args.query_ids is not None:
        lookup = {int(t): i for i, t in enumerate(qids)}
        missing = [t for t in args.query_ids if t not in lookup]
        if missing:
            raise InputError(f"query ids not found in the embeddings: {missing[:10]}")
        rows = np.array([lookup[t] for t in args.query_ids])
    progress = not args.no_progress
    index = SimilarityIndex(emb[modality], ids=ids, modality=modality, kind=args.kind,
                            progress=progress)
    table = index.search(qemb[query_modality][rows], k=args.k, query_modality=query_modality,
                         modality=modality, query_ids=qids[rows], progress=progress)
    if args.out:
        check_output_path(args.out, overwrite=args.overwrite)
        fmt = "fits" if str(args.out).lower().endswith((".fits", ".fit")) else "ascii.ecsv"
        with atomic_path(args.out) as tmp:
            table.write(tmp, format=fmt, overwrite=True)
        print(f"wrote {args.out}")
    else:
        table.pprint(max_lines=-1, max_width=-1)
