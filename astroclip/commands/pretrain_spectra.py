"""``astroclip pretrain-spectra``: masked-segment pretraining of the spectrum transformer."""

__all__ = ["HELP", "add_arguments", "run"]

HELP = "Pretrain the spectrum transformer by filling masked segments (Lightning, resumable)."


def add_arguments(parser):
    from ._common import add_run_folder_options, preset_choices
    add_run_folder_options(parser)
    parser.add_argument("--preset", default="small", choices=preset_choices("spectrum"),
                        help="model size (default: small)")
    parser.add_argument("--max-steps", type=int, default=1000, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=32, help="spectra per batch and device")
    parser.add_argument("--lr", type=float, default=3e-4, help="peak AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="linear warm-up steps (default: 5%% of the run, at most 2000)")
    parser.add_argument("--mask-run-length", type=int, default=None,
                        help="tokens per masked run (paper 30, released 50)")
    parser.add_argument("--mask-placement", choices=("anywhere", "per_section"), default=None,
                        help="masked runs anywhere (paper) or one per sixth (released)")
    parser.add_argument("--accumulate", type=int, default=1, help="gradient accumulation")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="steps between atomic checkpoints")
    parser.add_argument("--val-every", type=int, default=None, help="steps between validations")
    from ._common import add_lightning_options
    add_lightning_options(parser)


def run(args):
    from ._common import lightning_kwargs
    from ..training.spectra import pretrain_spectra

    pretrain_spectra(args.data, out=args.out, preset=args.preset, max_steps=args.max_steps,
                     batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                     warmup_steps=args.warmup_steps, mask_run_length=args.mask_run_length,
                     mask_placement=args.mask_placement,
                     accumulate_grad_batches=args.accumulate,
                     checkpoint_every=args.checkpoint_every, val_every=args.val_every,
                     **lightning_kwargs(args))
    print(f"model written to {args.out}")
