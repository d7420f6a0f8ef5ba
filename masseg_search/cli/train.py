"""`masseg-search train`: one SAM2 fine-tuning run (the same code a sweep trial runs), resumable."""
from __future__ import annotations

import argparse

from masseg_search.cli.options import add_config_options, load_args_config
from masseg_search.config import resolve_config_path
from masseg_search.errors import MassegError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` command."""
    parser = subparsers.add_parser(
        "train",
        help="fine-tune SAM2 once (validation J&F per epoch, sam2-format checkpoints)",
        description="Fine-tune SAM2 (sam2's SAM2Train) on MOSE-layout clips with the config's train section: "
        "weighted CE/focal + Dice + Sim + MaskIoU loss, probability-controlled augmentation, AdamW with layer decay, "
        "cosine schedule, gradient clipping. Each epoch ends with J&F on the validation split and writes "
        "<out>/checkpoints/checkpoint.pt (last) and best.pt ({'model': ..., 'optimizer': ..., 'epoch': ...}, "
        "loadable by `infer`, `tune-mss` and plain SAM2) plus <out>/history.csv.",
    )
    add_config_options(parser)
    parser.add_argument("--out", help="run folder (default: results/train/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/checkpoint.pt")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train, print each epoch's validation J&F and where the checkpoints are."""
    from pathlib import Path

    from masseg_search.data.synth import ensure_training_data
    from masseg_search.finetune.loop import LAST_CHECKPOINT, train_run

    config = load_args_config(args)
    out_dir = Path(args.out) if args.out else Path("results/train") / resolve_config_path(args.config).stem
    last = out_dir / "checkpoints" / LAST_CHECKPOINT
    resume_from = None
    if last.is_file():
        if not args.resume:
            raise MassegError("this run folder already holds a checkpoint", last,
                              "pass --resume to continue it, or --out for a new run")
        resume_from = last
    elif args.resume:
        print(f"no checkpoint in {out_dir / 'checkpoints'}: starting from the beginning")
    ensure_training_data(config)
    result = train_run(config, out_dir, resume_from=resume_from, progress=not args.no_progress)
    for record in result.history:
        print(f"epoch {record.epoch}: loss {record.loss:.4f}  val J&F {record.val_jf:.4f} "
              f"(J {record.val_j:.4f}, F {record.val_f:.4f})  {record.iterations_per_second:.2f} it/s")
    print(f"last checkpoint: {result.last_checkpoint}")
    if result.best_checkpoint is not None:
        print(f"best checkpoint: {result.best_checkpoint} (val J&F {result.best_val_jf:.4f})")
    return 0
