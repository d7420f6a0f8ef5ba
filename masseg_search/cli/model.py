"""`masseg-search model`: model configs and checkpoints (`init` writes a random checkpoint, `check` loads one)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `model` command and its `init` / `check` subcommands."""
    parser = subparsers.add_parser(
        "model",
        help="SAM2 model configs and checkpoints: write a random checkpoint, check one against a config",
        description="Model configs are SAM2-format Hydra yaml files: our names (tiny64, tiny128, tiny256 under "
        "configs/models/), sam2's (configs/sam2.1/sam2.1_hiera_b+.yaml) or a path to any SAM2 yaml.",
    )
    actions = parser.add_subparsers(dest="model_action", metavar="ACTION")
    init = actions.add_parser("init", help="write a randomly initialised model as an official {'model': ...} checkpoint")
    init.add_argument("--model-config", required=True, help="tiny64 | tiny128 | tiny256 | a sam2 config name | a yaml path")
    init.add_argument("--out", required=True, help="checkpoint file to write (e.g. results/checkpoints/tiny256_seed0.pt)")
    init.add_argument("--seed", type=int, default=0, help="torch seed of the initialisation (default 0)")
    init.set_defaults(func=run_init)
    check = actions.add_parser("check", help="build a config and load a checkpoint into it (clear error on mismatch)")
    check.add_argument("--model-config", required=True, help="tiny64 | tiny128 | tiny256 | a sam2 config name | a yaml path")
    check.add_argument("--checkpoint", required=True, help="official {'model': ...} or training checkpoint")
    check.set_defaults(func=run_check)
    export = actions.add_parser("export", help="strip a training checkpoint to official {'model': ...} weights")
    export.add_argument("--checkpoint", required=True, help="a checkpoint written by train / train-sweep")
    export.add_argument("--out", required=True, help="weights-only checkpoint to write")
    export.add_argument("--model-config", help="check the weights fit this config before writing")
    export.set_defaults(func=run_export)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def run_init(args: argparse.Namespace) -> int:
    """Write the random checkpoint."""
    from masseg_search.model.build import init_checkpoint, resolve_model_config

    path = init_checkpoint(args.model_config, args.out, seed=args.seed)
    print(f"wrote a random {resolve_model_config(args.model_config).stem} checkpoint (seed {args.seed}) to {path}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Build, load, print the parameter count."""
    from masseg_search.model.build import build_model, resolve_model_config

    model = build_model(args.model_config, args.checkpoint, device="cpu")
    count = sum(p.numel() for p in model.parameters())
    print(f"{args.checkpoint} fits {resolve_model_config(args.model_config)} ({count:,} parameters, image size {model.image_size})")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Write the weights-only checkpoint."""
    from masseg_search.model.build import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.out, args.model_config)
    print(f"wrote the model weights of {args.checkpoint} to {path}")
    return 0
