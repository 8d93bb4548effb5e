"""Shared command-line plumbing: common flags -> config overrides, error reporting."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kpfast.engine.config import Config, ConfigError, apply_overrides, config_from_dict, load_config

# flag dest -> dotted config key
COMMON_FLAGS = {
    "epochs": ("train.epochs", int, "number of training epochs"),
    "learning_rate": ("optim.lr", float, "base learning rate"),
    "batch_size": ("train.batch_size", int, "batch size per process"),
    "data_root": ("data.root", str, "dataset root (COCO layout)"),
    "output_dir": ("train.output_dir", str, "directory that receives the run directory"),
    "device": ("train.device", str, "auto | cpu | cuda | cuda:N"),
    "ops_backend": ("train.ops_backend", str, "backend for kpfast ops: auto | torch | cpu | cuda | triton"),
    "seed": ("train.seed", int, "random seed"),
    "workers": ("data.num_workers", int, "data-loader worker processes"),
}


def add_config_arguments(parser: argparse.ArgumentParser, flags=tuple(COMMON_FLAGS)) -> None:
    parser.add_argument("--config", default=None, help="YAML config path or a name in configs/ (default: default)")
    for dest in flags:
        key, tp, text = COMMON_FLAGS[dest]
        option = "--ops-backend" if dest == "ops_backend" else f"--{dest}"
        aliases = [option, "--ops_backend"] if dest == "ops_backend" else [option]
        parser.add_argument(*aliases, dest=dest, type=tp, default=None, help=f"{text} (sets {key})")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, value parsed as YAML (e.g. --set loss.kind=mse); repeatable",
    )


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """--set overrides first, then the dedicated flags (which therefore win over --set)."""
    overrides = list(args.overrides)
    for dest, (key, _, _) in COMMON_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides.append(f"{key}={value}" if not isinstance(value, str) else f"{key}={_yaml_str(value)}")
    return overrides


def _yaml_str(value: str) -> str:
    import yaml

    return yaml.safe_dump(value, default_style='"').strip()


def resolve_config(args: argparse.Namespace, checkpoint_config: dict | None = None) -> Config:
    """--config (or the checkpoint's stored config, or configs/default.yaml) + overrides."""
    overrides = overrides_from_args(args)
    if args.config is None and checkpoint_config is not None:
        return config_from_dict(apply_overrides(checkpoint_config, overrides))
    return load_config(args.config, overrides)


def run_cli(main, argv=None) -> int:
    """Run ``main(argv)`` turning configuration/input errors into one-line messages."""
    try:
        return int(main(argv) or 0)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
