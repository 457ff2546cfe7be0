"""Options shared by the embedding and search sub-commands (the training ones: `._options`)."""

__all__ = ["add_runtime_options"]


def add_runtime_options(parser, *, model=True):
    """--model, --device, --batch-size and --no-progress."""
    if model:
        parser.add_argument("--model", default=None,
                            help="model name (see list_models) or model folder; default: "
                                 "astroclip.conf.default_model")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda:N")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
