"""Shared command-line plumbing: common flags -> config overrides, start-up checks, error reporting.

Every kpfast command runs its ``main`` through :func:`run_cli`: a mistake in the user's input
(a config key, a file, a device) ends the program with exit code 2 and one line on stderr that
names the key/file/argument and what to do. ``KPFAST_DEBUG=1`` prints the traceback as well.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from kpfast.engine.config import (
    Config,
    ConfigError,
    _read_yaml,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    list_configs,
    load_config,
    resolve_config_path,
    validate_schema,
)

DEBUG_ENV = "KPFAST_DEBUG"

# flag dest -> (dotted config key, type, help)
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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every flag's default; flags whose help already states it are left alone."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text:
            return text
        return super()._get_help_string(action)


def _default_config_values() -> dict:
    """The shipped default config as plain values (types and ranges checked; nothing built)."""
    return config_to_dict(validate_schema(_read_yaml(resolve_config_path("default"))))


def _lookup(values: dict, dotted: str):
    node = values
    for part in dotted.split("."):
        node = node[part]
    return node


class _ListConfigs(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        entries = list_configs()
        width = max((len(name) for name, _ in entries), default=0)
        for name, description in entries:
            print(f"{name:<{width}}  {description}")
        parser.exit(0)


def add_config_arguments(parser: argparse.ArgumentParser, flags=tuple(COMMON_FLAGS)) -> None:
    defaults = _default_config_values()
    parser.add_argument(
        "--config",
        default=None,
        help="a YAML file of your own (a path that exists wins) or the name of a shipped config "
        "(see --list-configs) (default: 'default', or the checkpoint's stored config where there is one)",
    )
    parser.add_argument("--list-configs", action=_ListConfigs, help="list the shipped configs and exit")
    for dest in flags:
        key, tp, text = COMMON_FLAGS[dest]
        option = "--ops-backend" if dest == "ops_backend" else f"--{dest}"
        aliases = [option, "--ops_backend"] if dest == "ops_backend" else [option]
        shown = _lookup(defaults, key)
        parser.add_argument(
            *aliases,
            dest=dest,
            type=tp,
            default=None,  # None = not given: the config's value stays
            help=f"{text}; sets {key} (default: the config's value, {shown!r} in the 'default' config)",
        )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, value parsed as YAML (e.g. --set loss.kind=mse); repeatable "
        "(default: no overrides)",
    )
    if parser.epilog is None:
        parser.epilog = (
            f"Errors are one line (exit code 2); set {DEBUG_ENV}=1 to see the traceback. "
            "Configs: python -m kpfast.train --list-configs."
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


def machine_process_limit() -> int:
    """The most data-loader workers or CPU threads a config may ask of this machine."""
    return max(8, 4 * (os.cpu_count() or 1))


def _check_process_counts(config: Config) -> None:
    limit = machine_process_limit()
    for key, value in (("data.num_workers", config.data.num_workers), ("train.cpu_threads", config.train.cpu_threads)):
        if value is not None and value > limit:
            raise ConfigError(f"{key}: {value} is more than this machine can run ({os.cpu_count()} CPUs; at most "
                              f"{limit}); use e.g. {min(os.cpu_count() or 1, 8)}")


def check_environment(config: Config) -> None:
    """Raise ConfigError now, before anything is written, when this machine cannot run the
    requested device or ops backend (instead of failing at the first training step)."""
    import torch

    from kpfast import backends

    name = config.train.device
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device: {name!r} needs a CUDA GPU but torch sees none; use --device cpu (or auto)"
            )
        index = int(name[5:]) if name.startswith("cuda:") else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"train.device: {name!r} but only {torch.cuda.device_count()} GPU(s) are visible")
    _check_process_counts(config)
    device = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)
    try:
        backends.default_backend()  # validates $KPFAST_BACKEND
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    backend = config.train.ops_backend
    if backend not in ("auto", "torch"):
        reason = backends._device_reason(backend, device)
        if reason is not None:
            raise ConfigError(
                f"train.ops_backend: {backend!r} cannot run on this {device.type} device ({reason}); "
                "use --ops-backend auto"
            )


def resolve_config(args: argparse.Namespace, checkpoint_config: dict | None = None, *,
                   check_machine: bool = True) -> Config:
    """--config (or the checkpoint's stored config, or the shipped default) + overrides, validated,
    and (``check_machine``) checked against this machine's devices and backends."""
    overrides = overrides_from_args(args)
    if args.config is None and checkpoint_config is not None:
        config = config_from_dict(apply_overrides(checkpoint_config, overrides))
    else:
        config = load_config(args.config, overrides)
    if check_machine:
        check_environment(config)
    return config


def _user_errors() -> tuple[type[BaseException], ...]:
    from kpfast.backends import BackendUnavailableError

    return (ConfigError, BackendUnavailableError, OSError, ValueError, TypeError)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and type(exc).__str__ is OSError.__str__ and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        text = f"{where}{exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def run_cli(main, argv=None) -> int:
    """Run ``main(argv)``; a user-input error becomes one line on stderr and exit code 2.

    KeyboardInterrupt and SystemExit pass through. ``KPFAST_DEBUG=1`` also prints the traceback.
    """
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return int(main(argv) or 0)
    except _user_errors() as exc:
        if debug:
            traceback.print_exc()
        label = "config error" if isinstance(exc, ConfigError) else "error"
        print(f"{label}: {_one_line(exc)}", file=sys.stderr)
        return 2
