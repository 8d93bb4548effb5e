"""The config flags shared by train, eval and predict: ``--config``, ``--set KEY=VALUE`` and the
common flags become a validated :class:`~kpfast.engine.config.Config`, checked against this
machine (devices, ops backend, process counts) before anything is written.

Running a command and reporting its errors in one line is :mod:`kpfast.cli`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from kpfast.cli import DEBUG_ENV
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


# --------------------------------------------------------------------------- weights

# --ema: which weights of a kpfast checkpoint to use (its EMA copy when there is one, always, or
# never), as kpfast.models.load_pretrained names the same choice.
EMA_CHOICES = {"auto": "auto", "on": "ema", "off": "model"}
# The former spelling, --weights auto|ema|model, still accepted beside --checkpoint.
_OLD_EMA_SPELLING = {"auto": "auto", "ema": "on", "model": "off"}


def add_weights_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--checkpoint (a kpfast training checkpoint) or --weights NAME|PATH|URL (pretrained weights
    in any format kpfast.models.load_pretrained reads, docs/pretrained.md), and --ema."""
    parser.add_argument("--checkpoint", default=None,
                        help=f"a kpfast training checkpoint (.pt) to {what}; its stored config is used unless "
                        "--config is given (default: none; give --checkpoint or --weights)")
    parser.add_argument("--weights", default=None, metavar="NAME|PATH|URL",
                        help=f"pretrained weights to {what} instead: a published name (docs/pretrained.md), a file "
                        "(MMPose 1.x/0.x, kpfast, a state dict) or an http(s) URL; the network comes from the "
                        "weights, the input size from the published table or the config "
                        "(--config/--set data.input_size=[H,W]) (default: none)")
    parser.add_argument("--ema", choices=tuple(EMA_CHOICES), default=None,
                        help="kpfast checkpoints: use the EMA weights when there are some (auto), always (on) or "
                        "never (off) (default: auto)")


def check_weights_arguments(args: argparse.Namespace) -> None:
    """Exactly one of --checkpoint / --weights, and --ema resolved. ``--checkpoint X --weights
    auto|ema|model`` (the former spelling of --ema) still works, with a note on stderr."""
    if args.checkpoint is not None and args.weights in _OLD_EMA_SPELLING:
        new = _OLD_EMA_SPELLING[args.weights]
        if args.ema is not None and args.ema != new:
            raise ValueError(f"--weights {args.weights} (the former spelling of --ema {new}) contradicts --ema "
                             f"{args.ema}; give only --ema")
        print(f"note: --weights {args.weights} with --checkpoint is deprecated; use --ema {new}", file=sys.stderr)
        args.ema, args.weights = new, None
    if args.checkpoint is not None and args.weights is not None:
        raise ValueError(f"--checkpoint and --weights: give one, got both ({args.checkpoint!r}, {args.weights!r})")
    if args.checkpoint is None and args.weights is None:
        raise ValueError("--checkpoint or --weights: one is required (a kpfast training checkpoint, or pretrained "
                         "weights by name, path or URL)")
    if args.weights in _OLD_EMA_SPELLING and not os.path.exists(args.weights):
        raise ValueError(f"--weights {args.weights}: that is the former spelling of --ema (with --checkpoint); "
                         "--weights takes a published name, a file or a URL")
    if args.ema is None:
        args.ema = "auto"


@dataclasses.dataclass
class LoadedWeights:
    """The network a command runs, its config, and where both came from."""

    model: Any  # torch.nn.Module on the CPU
    config: Config
    dataset_info: dict | None  # a kpfast checkpoint's stored keypoint names, flip pairs, skeleton, sigmas
    summary: str


def _network_of(config: Config) -> dict:
    m = config.model
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in m.overrides.items()}
    return {"model.name": m.name, "model.num_keypoints": m.num_keypoints, "model.visibility_head": m.visibility_head,
            "model.overrides": overrides}


def load_weights(args: argparse.Namespace, *, check_machine: bool = True) -> LoadedWeights:
    """The network and config of ``--checkpoint`` or ``--weights`` (see add_weights_arguments).

    With --weights the config is --config (or a kpfast file's stored config, or the shipped
    default) with the weights' network (preset, keypoints, visibility head, overrides) and, for
    a published checkpoint, its input size set first, the user's --set on top. Network keys
    changed by --set must still fit every tensor of the file: these commands never run
    re-initialised heads."""
    check_weights_arguments(args)
    choice = EMA_CHOICES[args.ema]
    if args.checkpoint is not None:
        from kpfast.engine.checkpointer import load_training_checkpoint, model_from_checkpoint

        state = load_training_checkpoint(args.checkpoint)
        config = resolve_config(args, state["config"], check_machine=check_machine)
        model = model_from_checkpoint(state, config, weights=choice)
        return LoadedWeights(model, config, state.get("dataset_info"),
                             f"{args.checkpoint}: kpfast checkpoint, {config.model.name}")
    from kpfast.models.pretrained import known_weights, load_pretrained

    model, report = load_pretrained(args.weights, weights=choice)
    stored = report.stored_config if args.config is None else None
    network = {"model.name": report.preset, "model.num_keypoints": report.num_keypoints,
               "model.visibility_head": report.visibility_head, "model.overrides": report.overrides}
    derived = [] if stored is not None else [f"{key}={_yaml_flow(value)}" for key, value in network.items()]
    known = known_weights(args.weights)
    if known is not None:
        derived.append(f"data.input_size=[{known.input_size[0]}, {known.input_size[1]}]")
    overrides = derived + overrides_from_args(args)
    config = config_from_dict(apply_overrides(stored, overrides)) if stored is not None else load_config(
        args.config, overrides)
    if check_machine:
        check_environment(config)
    changed = [key for key, value in _network_of(config).items() if network[key] != value]
    if changed:  # --set model.* (or a kpfast file's stored config): the file must fit that network
        model, report = load_pretrained(args.weights, weights=choice, preset=config.model.name,
                                        num_keypoints=config.model.num_keypoints,
                                        visibility_head=config.model.visibility_head,
                                        overrides=dict(config.model.overrides))
        if report.reinitialised:
            raise ValueError(f"--weights: {args.weights} has no weights for {', '.join(report.reinitialised)} of the "
                             f"configured network ({', '.join(changed)} differ from the file's); evaluation, "
                             "prediction and export use every weight from the file")
    return LoadedWeights(model, config, None, report.summary())


def _yaml_flow(value) -> str:
    import json

    return json.dumps(value)  # JSON is YAML's flow style: what --set values are parsed as
