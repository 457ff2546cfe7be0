"""Options shared by several sub-commands."""

__all__ = ["add_runtime_options", "add_run_folder_options", "add_lightning_options",
           "lightning_kwargs", "preset_choices"]


def preset_choices(family):
    """The bare preset names of ``family`` in the model factory's table (``small`` ...)."""
    from ..models.factory import list_models

    names = list_models(kind="preset", family=family)["name"]
    return sorted(str(n).split("-", 1)[1] for n in names)


def add_runtime_options(parser, *, model=True):
    """--model, --device, --batch-size and --no-progress."""
    if model:
        parser.add_argument("--model", default=None,
                            help="model name (see list_models) or model folder; default: "
                                 "astroclip.conf.default_model")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda:N")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _devices(value):
    """``auto``, a device count, or comma-separated device ids."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        return [int(v) for v in value.split(",")]


def add_run_folder_options(parser):
    """``--data`` and ``--out`` of the training commands."""
    parser.add_argument("--data", required=True,
                        help="paired HDF5 training-set file (train rows train, val rows validate)")
    parser.add_argument("--out", required=True,
                        help="run folder: last.ckpt, logs/, then model.safetensors + config.json")


def add_lightning_options(parser):
    """Options shared by the training commands: seed, data loading, devices, resume."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=0, help="data-loader processes")
    parser.add_argument("--device", default=None,
                        help="one device: cpu, cuda, cuda:1 (overrides --accelerator/--devices)")
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator")
    parser.add_argument("--devices", type=_devices, default="auto",
                        help="number of devices per node or comma-separated ids")
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    parser.add_argument("--precision", default=None,
                        help="Lightning precision (default: bf16-mixed on GPU, 32-true on CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-resume", action="store_true",
                        help="do not continue from OUT/last.ckpt")
    parser.add_argument("--overwrite", action="store_true", help="start over in OUT")


def lightning_kwargs(args):
    """The keyword arguments of the training functions set by `add_lightning_options`."""
    return dict(seed=args.seed, num_workers=args.num_workers, device=args.device,
                accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes,
                strategy=args.strategy, precision=args.precision,
                progress=not args.no_progress, resume=not args.no_resume,
                overwrite=args.overwrite)
