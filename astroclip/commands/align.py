"""``astroclip align``: contrastive alignment of an image and a spectrum encoder."""

__all__ = ["HELP", "add_arguments", "run"]

HELP = "Align image and spectrum encoders with the CLIP loss (Lightning, multi-GPU, resumable)."


def _freeze(value):
    """'paper', 'none', or 'image=backbone,spectrum=none'."""
    if "=" not in value:
        return value
    out = {}
    for part in value.split(","):
        side, _, level = part.partition("=")
        out[side.strip()] = level.strip()
    return out


def add_arguments(parser):
    from ._common import add_run_folder_options, preset_choices
    add_run_folder_options(parser)
    parser.add_argument("--preset", default="small",
                        help="where to start: a CLIP preset (" + ", ".join(preset_choices("clip"))
                             + "; default: small) or a trained aligned model (registered or "
                               "released name, or folder; see list_models)")
    parser.add_argument("--spectrum-model", default=None,
                        help="pretrained spectrum model: folder from pretrain-spectra, a "
                             "registered or released name, specformer.ckpt, or a spectrum "
                             "preset name (random init)")
    parser.add_argument("--image-model", default=None,
                        help="pretrained image model: folder from pretrain-images, a "
                             "registered or released name, a torchvision/MoCo v2 ResNet-50 or "
                             "DINOv2 checkpoint, or an image preset name (random init)")
    parser.add_argument("--image-preset", default=None,
                        help="architecture of an image checkpoint file (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=512,
                        help="pairs per optimizer step over all devices (default: 512)")
    parser.add_argument("--accumulate", type=int, default=1,
                        help="gradient-accumulation micro-batches per step")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=int, default=None,
                        help="optimizer steps (default: 15000, the paper's)")
    length.add_argument("--epochs", type=int, default=None, help="passes over the training set")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="linear warm-up steps (default: a tenth of the run, at most 1000)")
    parser.add_argument("--logit-scale", type=float, default=None,
                        help="fixed logit scale (default: the preset's, 15.5)")
    parser.add_argument("--freeze", type=_freeze, default=None,
                        help="freezing policy: paper (default), none, or "
                             "image=backbone|none|all,spectrum=backbone|none|all")
    parser.add_argument("--gather-negatives", action="store_true",
                        help="use the pairs of all devices as negatives")
    parser.add_argument("--no-augment", action="store_true",
                        help="no random flips and rotations of the images")
    parser.add_argument("--val-every", type=int, default=None,
                        help="steps between validations (default: one epoch)")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="steps between atomic checkpoints (default: one epoch, max 1000)")
    from ._common import add_lightning_options
    add_lightning_options(parser)


def run(args):
    from ._common import lightning_kwargs
    from ..training.align import align

    align(args.data, out=args.out, preset=args.preset, spectrum_model=args.spectrum_model,
          image_model=args.image_model, image_preset=args.image_preset,
          batch_size=args.batch_size, accumulate=args.accumulate, max_steps=args.max_steps,
          epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
          warmup_steps=args.warmup_steps, logit_scale=args.logit_scale, freeze=args.freeze,
          gather_negatives=args.gather_negatives, augment=not args.no_augment,
          val_every=args.val_every, checkpoint_every=args.checkpoint_every,
          **lightning_kwargs(args))
    print(f"aligned model written to {args.out}")
