"""Typed training configuration: dataclass schema, YAML loading, validation and overrides.

A config is a YAML mapping whose sections mirror the dataclasses below. Loading checks every
key and value against the schema; an unknown key, a wrong type or an out-of-range value raises
:class:`ConfigError` naming the full dotted key and, for unknown keys, the nearest valid one.
Command-line overrides are dotted assignments (``train.epochs=5``) whose right-hand side is
parsed as YAML, so ``model.overrides={width: 16}`` or ``optim.betas=[0.9, 0.99]`` work.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from kpfast.vocabulary import DECODE_METHODS, ENCODINGS, LOSS_KINDS

__all__ = [
    "ConfigError",
    "Config",
    "ModelConfig",
    "DataConfig",
    "LossConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "EvalConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
    "parse_override",
    "save_config",
    "resolve_config_path",
    "list_configs",
    "shipped_config_names",
    "CONFIG_DIR",
]

# The shipped configs live inside the package (kpfast/configs/*.yaml, installed as package data),
# so a name like "coco_litehrnet18_256x192" resolves from any working directory.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# decode_heatmaps' limit on the DARK/UDP blur kernel (kpfast.ops.decode.MAX_BLUR_KERNEL); kept
# here as a literal so that loading a config does not import the ops.
MAX_BLUR_KERNEL = 31
SEED_MAX = 2**32 - 1  # numpy.random.seed's range
# Values that size memory or processes are bounded here, machine-independently; per machine,
# kpfast.engine.arguments.check_environment also bounds workers and threads by the CPU count.
MAX_KEYPOINTS = 1024
MAX_WORKERS = 256
MAX_CPU_THREADS = 1024
MAX_BATCH_SIZE = 65536


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type, or is out of range."""


def _range(minimum=None, maximum=None, *, min_exclusive=False):
    """Field metadata describing the allowed numeric range."""
    return {"min": minimum, "max": maximum, "min_exclusive": min_exclusive}


@dataclass
class ModelConfig:
    """Which network to build (``kpfast.models.build_model``) and how to run it."""

    name: str = "litehrnet_18"
    num_keypoints: int = field(default=17, metadata=_range(1, MAX_KEYPOINTS))
    visibility_head: bool = False
    # Extra keyword arguments for build_model (e.g. narrower widths for a CPU-sized model).
    overrides: dict = field(default_factory=dict)
    gradient_checkpointing: bool = False
    channels_last: bool = False
    compile: bool = False


@dataclass
class DataConfig:
    """Where the data comes from and how samples are prepared."""

    dataset: Literal["synthetic", "coco"] = "synthetic"
    # COCO layout root (annotations/person_keypoints_{split}.json, images/{split}/).
    # For "synthetic", None means the package's cache directory.
    root: Optional[str] = None
    train_split: str = "train2017"
    val_split: str = "val2017"
    input_size: list = field(default_factory=lambda: [256, 192])  # (H, W) of the crop
    # Synthetic dataset generation (only used when dataset == "synthetic").
    synthetic_num_train: int = field(default=512, metadata=_range(1))
    synthetic_num_val: int = field(default=64, metadata=_range(1))
    synthetic_seed: int = field(default=0, metadata=_range(0, SEED_MAX))
    # Validation boxes: ground truth, or a detector's COCO-results JSON.
    use_gt_boxes: bool = True
    detections: Optional[str] = None
    det_score_threshold: float = field(default=0.0, metadata=_range(0.0, 1.0))
    # Passed unchanged to kpfast.data's augmentation builder (validated there):
    # "default", "none", or a mapping merged over kpfast.data.DEFAULT_AUGMENTATION.
    augmentation: Union[dict, str] = "default"
    # Extra keyword arguments for the dataset constructor (validated there).
    dataset_options: dict = field(default_factory=dict)
    # DataLoader worker processes (the key kpfast.data.build_dataloader reads).
    num_workers: int = field(default=2, metadata=_range(0, MAX_WORKERS))


@dataclass
class LossConfig:
    """Heatmap loss (``kpfast.ops.heatmap_loss``) plus the optional auxiliary terms."""

    kind: Literal[LOSS_KINDS] = "focal"  # kpfast/vocabulary.py
    encoding: Literal[ENCODINGS] = "udp"
    sigma: float = field(default=2.0, metadata=_range(0.0, min_exclusive=True))
    # Scale sigma with the heatmap size relative to 64x48 (kpfast.ops.adaptive_sigma).
    adaptive_sigma: bool = False
    # None: the kind's default (0.25 for focal, 2 for cornernet).
    alpha: Optional[float] = field(default=None, metadata=_range(0.0))
    gamma: float = field(default=2.0, metadata=_range(0.0))  # focal
    beta: float = field(default=4.0, metadata=_range(0.0))  # cornernet
    keypoint_weight: float = field(default=15.0, metadata=_range(0.0))
    background_weight: float = field(default=1.0, metadata=_range(0.0))
    threshold: float = field(default=0.1, metadata=_range(0.0, 1.0))
    l1_weight: Optional[float] = field(default=None, metadata=_range(0.0))
    # Online hard keypoint mining: average only the top-k per-keypoint losses of each sample.
    ohkm_topk: Optional[int] = field(default=None, metadata=_range(1))
    # Weights of the total loss terms.
    heatmap_weight: float = field(default=1.0, metadata=_range(0.0))
    visibility_weight: float = field(default=0.0, metadata=_range(0.0))
    coordinate_weight: float = field(default=0.0, metadata=_range(0.0))
    # Inverse temperature of the soft-argmax used by the coordinate loss.
    soft_argmax_beta: float = field(default=20.0, metadata=_range(0.0, min_exclusive=True))


@dataclass
class OptimConfig:
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = field(default=1e-3, metadata=_range(0.0, min_exclusive=True))
    weight_decay: float = field(default=1e-4, metadata=_range(0.0))
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))
    # Max global gradient norm; None disables clipping.
    grad_clip: Optional[float] = field(default=None, metadata=_range(0.0, min_exclusive=True))


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, evaluated per optimizer step (epochs may be fractional)."""

    name: Literal["constant", "cosine", "cosine_restarts", "step", "multistep"] = "cosine"
    warmup_epochs: float = field(default=0.0, metadata=_range(0.0))
    warmup_start_factor: float = field(default=0.001, metadata=_range(0.0, 1.0))
    # cosine / cosine_restarts: first cycle length (epochs, after warm-up) and growth factor.
    cycle_epochs: Optional[float] = field(default=None, metadata=_range(0.0, min_exclusive=True))
    cycle_mult: float = field(default=2.0, metadata=_range(1.0))
    min_lr_factor: float = field(default=0.0, metadata=_range(0.0, 1.0))
    # step / multistep
    step_epochs: int = field(default=30, metadata=_range(1))
    milestones: list = field(default_factory=lambda: [170, 200])
    gamma: float = field(default=0.1, metadata=_range(0.0, min_exclusive=True))


@dataclass
class TrainConfig:
    epochs: int = field(default=10, metadata=_range(1))
    batch_size: int = field(default=32, metadata=_range(1, MAX_BATCH_SIZE))  # per process
    seed: int = field(default=0, metadata=_range(0, SEED_MAX))
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    ops_backend: Literal["auto", "torch", "cpu", "cuda", "triton"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # Intra-op threads of each training process on CPU. None: the cores available to this
    # process divided among local processes, minus the data workers (at least 1), because
    # oversubscribed OpenMP threads slow a busy CPU down by an order of magnitude.
    cpu_threads: Optional[int] = field(default=None, metadata=_range(1, MAX_CPU_THREADS))
    ema: bool = False
    ema_decay: float = field(default=0.9998, metadata=_range(0.0, 1.0))
    eval_interval: int = field(default=1, metadata=_range(1))  # epochs
    # Stop after this many evaluations without a val-AP improvement; 0 disables.
    early_stopping_patience: int = field(default=0, metadata=_range(0))
    early_stopping_min_delta: float = field(default=0.0, metadata=_range(0.0))
    top_k: int = field(default=3, metadata=_range(0))
    max_consecutive_nonfinite: int = field(default=5, metadata=_range(1))
    log_interval: int = field(default=20, metadata=_range(1))  # steps between plain log lines
    # Stop (saving last.pt) after this many optimizer steps in this process; None = no limit.
    max_steps: Optional[int] = field(default=None, metadata=_range(1))
    output_dir: str = "runs"
    run_name: Optional[str] = None
    deterministic: bool = False
    visualize_samples: int = field(default=8, metadata=_range(0))


@dataclass
class EvalConfig:
    batch_size: int = field(default=64, metadata=_range(1, MAX_BATCH_SIZE))
    flip_test: bool = True
    decoder: Literal[DECODE_METHODS] = "dark"  # kpfast/vocabulary.py
    # Odd, 1..31 (what decode_heatmaps accepts); checked in _check_section.
    blur_kernel: int = field(default=11, metadata=_range(1, MAX_BLUR_KERNEL))
    # Keypoints scoring above this count towards the instance's rescored confidence.
    keypoint_score_threshold: float = field(default=0.2, metadata=_range(0.0, 1.0))
    # OKS-NMS between instances of one image (detector boxes); None disables.
    oks_nms_threshold: Optional[float] = field(default=0.9, metadata=_range(0.0, 1.0))
    pck_threshold: float = field(default=0.2, metadata=_range(0.0, min_exclusive=True))
    # Whose rules decide NMS, its OKS area and the ground-truth box clip: kpfast's or MMPose 1.3.2's
    # (docs/pretrained.md, "Evaluation protocols").
    protocol: Literal["kpfast", "mmpose"] = "kpfast"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- validation


# A config is a few hundred values; these bound what a hostile file (an alias bomb, a deeply
# nested value) can make loading, validation and error messages do (docs/files.md, "Limits").
MAX_CONFIG_NODES = 100_000
MAX_CONFIG_DEPTH = 64
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 120
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 3, 8, 8


def _show(value) -> str:
    """``repr`` bounded in length and depth, for error messages about user values."""
    return _REPR.repr(value)


def check_config_size(data, where: str) -> None:
    """Raise ConfigError when ``data`` (aliases counted as often as they are used) has more than
    MAX_CONFIG_NODES values or is nested deeper than MAX_CONFIG_DEPTH; stops counting early."""
    count = 0
    stack = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            raise ConfigError(f"{where}: more than {MAX_CONFIG_NODES} values (YAML aliases expanded); "
                              "a config needs a few hundred")
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{where}: nested more than {MAX_CONFIG_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
            stack.extend((k, depth + 1) for k in node.keys() if not isinstance(k, (str, int, float, bool)))
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


def _safe_load(text_or_stream, where: str):
    """yaml.safe_load, then :func:`check_config_size`; deep nesting is one ConfigError."""
    try:
        data = yaml.safe_load(text_or_stream)
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to parse") from None
    check_config_size(data, where)
    return data


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, key: str):
    """Check ``value`` against the annotation ``tp``; return it (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {_show(value)} matches none of {tp}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
            extra = f"; did you mean '{hint[0]}'?" if hint else ""
            raise ConfigError(f"{key}: expected one of {list(choices)}, got {_show(value)}{extra}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected bool, got {type(value).__name__} {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {type(value).__name__} {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; users mean the number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected float, got {type(value).__name__} {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected str, got {type(value).__name__} {_show(value)}")
        return value
    if tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {_show(value)}")
        return list(value)
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {_show(value)}")
        return copy.deepcopy(value)
    raise ConfigError(f"{key}: unsupported schema type {_type_name(tp)}")


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _check_range(value, meta: dict, key: str) -> None:
    if value is None or not meta:
        return
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None:
        if meta.get("min_exclusive") and not value > lo:
            raise ConfigError(f"{key}: must be > {lo}, got {_show(value)}")
        if not meta.get("min_exclusive") and not value >= lo:
            raise ConfigError(f"{key}: must be >= {lo}, got {_show(value)}")
    if hi is not None and not value <= hi:
        raise ConfigError(f"{key}: must be <= {hi}, got {_show(value)}")


def _build(cls, data: Any, prefix: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__} {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key '{dotted}'{_suggest(str(key), list(fields))}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, dotted)
            continue
        coerced = _coerce(value, tp, dotted)
        _check_range(coerced, dict(fields[key].metadata), dotted)
        kwargs[key] = coerced
    config = cls(**kwargs)
    _check_section(config, prefix)
    return config


_DEVICE_FORMS = "auto, cpu, cuda or cuda:N (N >= 0)"


def _check_device(value: str, key: str) -> None:
    if value in ("auto", "cpu", "cuda"):
        return
    if value.startswith("cuda:") and value[5:].isdigit():
        return
    raise ConfigError(f"{key}: expected {_DEVICE_FORMS}, got {_show(value)}")


def _check_nonempty(value, key: str) -> None:
    if value is not None and not str(value).strip():
        raise ConfigError(f"{key}: must not be empty")


def _check_section(section, prefix: str) -> None:
    """Cross-field and format checks that the per-field types and ranges cannot express."""
    if isinstance(section, ModelConfig):
        _check_nonempty(section.name, f"{prefix}.name")
    if isinstance(section, DataConfig):
        size = section.input_size
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
            raise ConfigError(f"{prefix}.input_size: expected [H, W] positive ints, got {_show(size)}")
        if not section.use_gt_boxes and section.detections is None:
            raise ConfigError(f"{prefix}.detections: required when {prefix}.use_gt_boxes is false")
        for name in ("root", "detections", "train_split", "val_split"):
            _check_nonempty(getattr(section, name), f"{prefix}.{name}")
        for name in ("train_split", "val_split"):
            if any(sep in getattr(section, name) for sep in ("/", "\\")) or getattr(section, name) in (".", ".."):
                raise ConfigError(f"{prefix}.{name}: expected a split name such as 'val2017', got "
                                  f"{getattr(section, name)!r}")
        try:
            from kpfast.data.augment import resolve_augmentation_config

            resolve_augmentation_config(section.augmentation)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{prefix}.augmentation: {exc}") from None
    if isinstance(section, OptimConfig):
        if len(section.betas) != 2 or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in section.betas
        ):
            raise ConfigError(f"{prefix}.betas: expected two floats in [0, 1), got {_show(section.betas)}")
    if isinstance(section, ScheduleConfig):
        ms = section.milestones
        if not all(isinstance(m, (int, float)) and not isinstance(m, bool) and m > 0 for m in ms) or list(ms) != sorted(
            ms
        ):
            raise ConfigError(f"{prefix}.milestones: expected increasing positive numbers, got {_show(ms)}")
    if isinstance(section, TrainConfig):
        _check_device(section.device, f"{prefix}.device")
        _check_nonempty(section.output_dir, f"{prefix}.output_dir")
        if section.run_name is not None:
            from kpfast.engine.rundir import check_run_name

            try:
                check_run_name(section.run_name)
            except ValueError as exc:
                raise ConfigError(f"{prefix}.run_name: {exc}") from None
    if isinstance(section, EvalConfig):
        if section.blur_kernel % 2 != 1:
            raise ConfigError(
                f"{prefix}.blur_kernel: must be odd (the DARK/UDP blur kernel is centred), got "
                f"{section.blur_kernel}; e.g. use {section.blur_kernel + 1}"
            )


def _check_config(config: Config) -> None:
    """Checks across sections, run once the whole config is built."""
    if config.loss.ohkm_topk is not None and config.loss.ohkm_topk > config.model.num_keypoints:
        raise ConfigError(
            f"loss.ohkm_topk: must be <= model.num_keypoints ({config.model.num_keypoints}), "
            f"got {config.loss.ohkm_topk}"
        )
    _check_model(config)


def _check_model(config: Config) -> None:
    """Build the network once (on the CPU: a few MB; the meta device is slower because its
    weight init goes through torch's Python references) so that a bad model name, option or
    input size is reported now rather than after the run directory exists."""
    import torch

    from kpfast.models import available_models, build_model, model_options

    m = config.model
    if m.name not in available_models():
        hint = difflib.get_close_matches(m.name, available_models(), n=1, cutoff=0.5)
        extra = f"; did you mean '{hint[0]}'?" if hint else ""
        raise ConfigError(f"model.name: expected one of {available_models()}, got {m.name!r}{extra}")
    unknown = sorted(set(m.overrides) - set(model_options()))
    if unknown:
        raise ConfigError(f"model.overrides: unknown option(s) {unknown}; valid options: {model_options()}")
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's RNG stream stays untouched
            model = build_model(m.name, num_keypoints=m.num_keypoints, visibility_head=m.visibility_head,
                                **copy.deepcopy(m.overrides))
    except (ValueError, TypeError, KeyError, IndexError, AssertionError, RuntimeError) as exc:
        raise ConfigError(f"model.overrides: {_show(m.overrides)} does not build model {m.name!r}: {exc}") from None
    if hasattr(model, "check_input_size"):
        try:
            model.check_input_size(*config.data.input_size)
        except ValueError as exc:
            raise ConfigError(f"data.input_size: {exc}") from None


def config_from_dict(data: dict) -> Config:
    """Validate a plain mapping against the schema and return a :class:`Config`."""
    check_config_size(data, "config")
    config = _build(Config, data, "")
    _check_config(config)
    return config


def config_to_dict(config) -> dict:
    """The config as plain YAML-serialisable containers."""
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into (["a", "b"], yaml-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {_show(text)}: expected KEY=VALUE (e.g. train.epochs=5)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {_show(text)}: empty key")
    try:
        value = _safe_load(raw, f"override {_show(text)}") if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {_show(text)}: value is not valid YAML ({' '.join(str(exc).split())})") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of ``data`` with dotted ``KEY=VALUE`` overrides applied.

    Keys are checked against the schema so that a typo fails with a suggestion instead of
    creating a new, silently ignored key. Inside free-form mappings (model.overrides,
    data.augmentation, data.dataset_options) any sub-key is allowed.
    """
    result = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        cls: Any = Config
        node = result
        for depth, part in enumerate(path):
            dotted = ".".join(path[: depth + 1])
            last = depth == len(path) - 1
            if cls is not None:
                names = {f.name: f for f in dataclasses.fields(cls)}
                if part not in names:
                    raise ConfigError(f"unknown config key '{dotted}'{_suggest(part, list(names))}")
                tp = typing.get_type_hints(cls)[part]
                cls = tp if dataclasses.is_dataclass(tp) else None
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if child is None:
                    child = node[part] = {}
                if not isinstance(child, dict):
                    raise ConfigError(f"override {_show(text)}: '{dotted}' is not a mapping")
                node = child
    return result


def _read_yaml(path: Path) -> dict:
    try:
        with open(path) as handle:
            data = _safe_load(handle, str(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (YAML) file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at top level, got {type(data).__name__}")
    return data


def shipped_config_names() -> list[str]:
    """Names of the configs shipped in the package (kpfast/configs/*.yaml), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []


def config_description(path: str | Path) -> str:
    """The first sentence of a YAML file's leading comment block, on one line ("" if none)."""
    lines = []
    with open(path) as handle:
        for line in handle:
            stripped = line.strip()
            if not stripped.startswith("#"):
                break
            text = stripped.lstrip("#")
            if text.startswith("   ") or not text.strip():  # an indented example command ends the prose
                break
            lines.append(text.strip())
    prose = " ".join(lines)
    match = re.search(r"(?<=[.!?])\s", prose)
    return prose[: match.start()] if match else prose


def list_configs() -> list[tuple[str, str]]:
    """(name, one-line description) of every shipped config."""
    return [(name, config_description(CONFIG_DIR / f"{name}.yaml")) for name in shipped_config_names()]


def resolve_config_path(name: str | Path) -> Path:
    """``name`` as a path when that file exists (a user's own config wins), else a shipped config
    name (``coco_litehrnet18_256x192``, with or without ``.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"--config {str(name)!r} is a directory; expected a YAML file or a shipped config name")
    shipped = shipped_config_names()
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    if path.parent == Path(".") and stem in shipped:
        return CONFIG_DIR / f"{stem}.yaml"
    hint = difflib.get_close_matches(stem, shipped, n=1, cutoff=0.5)
    extra = f" (did you mean '{hint[0]}'?)" if hint else ""
    raise ConfigError(
        f"--config {str(name)!r}: no such file and no shipped config of that name{extra}; "
        f"shipped configs: {', '.join(shipped)} (python -m kpfast.train --list-configs describes them)"
    )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (default: the shipped ``default``), apply overrides, validate."""
    resolved = resolve_config_path(path if path is not None else "default")
    data = _read_yaml(resolved)
    data = apply_overrides(data, list(overrides or []))
    return config_from_dict(data)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from kpfast.outputs import atomic_write_bytes

    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    atomic_write_bytes(Path(path), text.encode())
