"""``astroclip pretrain-images``: MoCo v2 self-supervised pretraining of an image encoder."""

__all__ = ["HELP", "add_arguments", "run"]

HELP = "Pretrain an image encoder on galaxy cutouts with MoCo v2 (Lightning, resumable)."


def add_arguments(parser):
    from ._common import add_run_folder_options, preset_choices
    add_run_folder_options(parser)
    parser.add_argument("--preset", default="resnet-small", choices=preset_choices("image"),
                        help="image encoder (paper: MoCo v2 ResNet-50; default: resnet-small)")
    parser.add_argument("--max-steps", type=int, default=1000, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=256, help="images per batch and device")
    parser.add_argument("--queue-size", type=int, default=65536, help="negatives in the queue")
    parser.add_argument("--momentum", type=float, default=0.999, help="key-encoder momentum")
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (default: 0.03 x batch / 256 for SGD, 1e-3 AdamW)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup-steps", type=int, default=None)
    parser.add_argument("--accumulate", type=int, default=1, help="gradient accumulation")
    parser.add_argument("--checkpoint-every", type=int, default=None)
    parser.add_argument("--val-every", type=int, default=None)
    from ._common import add_lightning_options
    add_lightning_options(parser)


def run(args):
    from ._common import lightning_kwargs
    from ..training.images import pretrain_images

    pretrain_images(args.data, preset=args.preset, out=args.out, max_steps=args.max_steps,
                    batch_size=args.batch_size, queue_size=args.queue_size,
                    momentum=args.momentum, temperature=args.temperature,
                    optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                    warmup_steps=args.warmup_steps, accumulate_grad_batches=args.accumulate,
                    checkpoint_every=args.checkpoint_every, val_every=args.val_every,
                    **lightning_kwargs(args))
    print(f"image encoder written to {args.out}")
