"""Typed training configuration: pydantic schema, YAML loading, validation and overrides.

A config is a YAML mapping whose sections mirror the models below (the ``data`` section is
kpfast.data's own, kpfast/data/config.py). Loading checks every key and value against the schema;
an unknown key, a wrong type or an out-of-range value raises :class:`ConfigError`, one line naming
the full dotted key, the expected and the actual value and, for unknown keys, the nearest valid
one (kpfast/schema.py turns pydantic's errors into that line; docs/engine.md, "Configuration").
Command-line overrides are dotted assignments (``train.epochs=5``) whose right-hand side is
parsed as YAML, so ``model.overrides={width: 16}`` or ``optim.betas=[0.9, 0.99]`` work.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kpfast.data.config import SEED_MAX, DataConfig
from kpfast.engine.optim import OptimConfig, ScheduleConfig
from kpfast.schema import (
    MUST_MATCH,
    ConfigError,
    FieldInvalid,
    Float,
    Section,
    field,
    not_empty,
    resume_keys,
    show,
    suggest_choice,
    suggest_key,
    validate_section,
)

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
    "MUST_MATCH",
    "RESUME_KEYS",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "validate_schema",
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
# Values that size memory or processes are bounded here, machine-independently; per machine,
# kpfast.engine.arguments.check_environment also bounds workers and threads by the CPU count.
MAX_KEYPOINTS = 1024
MAX_CPU_THREADS = 1024
MAX_BATCH_SIZE = 65536


class ModelConfig(Section):
    """Which network to build (``kpfast.models.build_model``) and how to run it."""

    name: str = field("litehrnet_18", resume=True)
    num_keypoints: int = field(17, ge=1, le=MAX_KEYPOINTS, resume=True)
    visibility_head: bool = field(False, resume=True)
    # Extra keyword arguments for build_model (e.g. narrower widths for a CPU-sized model).
    overrides: dict = field({}, resume=True)
    gradient_checkpointing: bool = False
    channels_last: bool = False
    compile: bool = False

    @field_validator("name")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        return not_empty(value)

    def build(self):
        """``kpfast.models.build_model`` with this section's name, keypoints, head and overrides."""
        from kpfast.models import build_model

        overrides = copy.deepcopy(self.overrides)
        if self.gradient_checkpointing:
            overrides["gradient_checkpointing"] = True
        for key, value in list(overrides.items()):
            if isinstance(value, list):  # YAML lists -> the tuples LiteHRNetConfig expects
                overrides[key] = tuple(value)
        return build_model(self.name, num_keypoints=self.num_keypoints, visibility_head=self.visibility_head,
                           **overrides)


class LossConfig(Section):
    """Heatmap loss (``kpfast.ops.heatmap_loss``) plus the optional auxiliary terms."""

    kind: Literal[LOSS_KINDS] = "focal"  # kpfast/vocabulary.py
    encoding: Literal[ENCODINGS] = "udp"
    sigma: Float = field(2.0, gt=0.0)
    # Scale sigma with the heatmap size relative to 64x48 (kpfast.ops.adaptive_sigma).
    adaptive_sigma: bool = False
    # None: the kind's default (0.25 for focal, 2 for cornernet).
    alpha: Optional[Float] = field(None, ge=0.0)
    gamma: Float = field(2.0, ge=0.0)  # focal
    beta: Float = field(4.0, ge=0.0)  # cornernet
    keypoint_weight: Float = field(15.0, ge=0.0)
    background_weight: Float = field(1.0, ge=0.0)
    threshold: Float = field(0.1, ge=0.0, le=1.0)
    l1_weight: Optional[Float] = field(None, ge=0.0)
    # Online hard keypoint mining: average only the top-k per-keypoint losses of each sample.
    ohkm_topk: Optional[int] = field(None, ge=1)
    # Weights of the total loss terms.
    heatmap_weight: Float = field(1.0, ge=0.0)
    visibility_weight: Float = field(0.0, ge=0.0)
    coordinate_weight: Float = field(0.0, ge=0.0)
    # Inverse temperature of the soft-argmax used by the coordinate loss.
    soft_argmax_beta: Float = field(20.0, gt=0.0)


_DEVICE_FORMS = "auto, cpu, cuda or cuda:N (N >= 0)"


class TrainConfig(Section):
    epochs: int = field(10, ge=1)
    batch_size: int = field(32, ge=1, le=MAX_BATCH_SIZE)  # per process
    seed: int = field(0, ge=0, le=SEED_MAX)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    ops_backend: Literal["auto", "torch", "cpu", "cuda", "triton"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = field("fp32", resume=True)
    # Intra-op threads of each training process on CPU. None: the cores available to this
    # process divided among local processes, minus the data workers (at least 1), because
    # oversubscribed OpenMP threads slow a busy CPU down by an order of magnitude.
    cpu_threads: Optional[int] = field(None, ge=1, le=MAX_CPU_THREADS)
    ema: bool = field(False, resume=True)
    ema_decay: Float = field(0.9998, ge=0.0, le=1.0)
    eval_interval: int = field(1, ge=1)  # epochs
    # Stop after this many evaluations without a val-AP improvement; 0 disables.
    early_stopping_patience: int = field(0, ge=0)
    early_stopping_min_delta: Float = field(0.0, ge=0.0)
    top_k: int = field(3, ge=0)
    max_consecutive_nonfinite: int = field(5, ge=1)
    log_interval: int = field(20, ge=1)  # steps between plain log lines
    # Stop (saving last.pt) after this many optimizer steps in this process; None = no limit.
    max_steps: Optional[int] = field(None, ge=1)
    output_dir: str = "runs"
    run_name: Optional[str] = None
    deterministic: bool = False
    visualize_samples: int = field(8, ge=0)

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"expected {_DEVICE_FORMS}, got {show(value)}")

    @field_validator("output_dir")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        return not_empty(value)

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, value):
        if value is not None:
            from kpfast.engine.rundir import check_run_name

            check_run_name(value)  # its ValueError names what is wrong
        return value


class EvalConfig(Section):
    batch_size: int = field(64, ge=1, le=MAX_BATCH_SIZE)
    flip_test: bool = True
    decoder: Literal[DECODE_METHODS] = "dark"  # kpfast/vocabulary.py
    # Odd, 1..31 (what decode_heatmaps accepts).
    blur_kernel: int = field(11, ge=1, le=MAX_BLUR_KERNEL)
    # Keypoints scoring above this count towards the instance's rescored confidence.
    keypoint_score_threshold: Float = field(0.2, ge=0.0, le=1.0)
    # OKS-NMS between instances of one image (detector boxes); None disables.
    oks_nms_threshold: Optional[Float] = field(0.9, ge=0.0, le=1.0)
    pck_threshold: Float = field(0.2, gt=0.0)
    # Whose rules decide NMS, its OKS area and the ground-truth box clip: kpfast's or MMPose 1.3.2's
    # (docs/pretrained.md, "Evaluation protocols").
    protocol: Literal["kpfast", "mmpose"] = "kpfast"

    @field_validator("blur_kernel")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 != 1:
            raise ValueError(f"must be odd (the DARK/UDP blur kernel is centred), got {value}; e.g. use {value + 1}")
        return value


class Config(BaseModel):
    """The whole training config: one section per package that owns it."""

    model_config = ConfigDict(strict=True, extra="forbid")

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data):
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping, got {type(data).__name__} {show(data)}")
        return data

    @classmethod
    def resume_keys(cls) -> tuple[str, ...]:
        """The keys a resumed run must keep (the fields marked MUST_MATCH)."""
        return resume_keys(cls)

    @model_validator(mode="after")
    def _ohkm_fits_keypoints(self):
        topk, k = self.loss.ohkm_topk, self.model.num_keypoints
        if topk is not None and topk > k:
            raise FieldInvalid("loss.ohkm_topk", f"must be <= model.num_keypoints ({k}), got {topk}")
        return self


# Config keys whose change makes the stored model/optimizer/scheduler states unloadable or changes
# what they mean, read from the schema's MUST_MATCH markers; everything else may differ on resume.
RESUME_KEYS = resume_keys(Config)

# A config is a few hundred values; these bound what a hostile file (an alias bomb, a deeply
# nested value) can make loading, validation and error messages do (docs/files.md, "Limits").
MAX_CONFIG_NODES = 100_000
MAX_CONFIG_DEPTH = 64


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


def _check_model(config: Config) -> None:
    """Build the network once (on the CPU: a few MB; the meta device is slower because its
    weight init goes through torch's Python references) so that a bad model name, option or
    input size is reported now rather than after the run directory exists."""
    import torch

    from kpfast.models import available_models, model_options

    m = config.model
    if m.name not in available_models():
        raise ConfigError(f"model.name: expected one of {available_models()}, got {m.name!r}"
                          f"{suggest_choice(m.name, available_models())}")
    unknown = sorted(set(m.overrides) - set(model_options()))
    if unknown:
        raise ConfigError(f"model.overrides: unknown option(s) {unknown}; valid options: {model_options()}")
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's RNG stream stays untouched
            model = m.build()
    except (ValueError, TypeError, KeyError, IndexError, AssertionError, RuntimeError) as exc:
        raise ConfigError(f"model.overrides: {show(m.overrides)} does not build model {m.name!r}: {exc}") from None
    if hasattr(model, "check_input_size"):
        try:
            model.check_input_size(*config.data.input_size)
        except ValueError as exc:
            raise ConfigError(f"data.input_size: {exc}") from None


def validate_schema(data) -> Config:
    """Types, ranges and per-key rules of a plain mapping (nothing is built): the config, or one
    ConfigError line naming the key."""
    check_config_size(data, "config")
    return validate_section(Config, data)


def config_from_dict(data: dict) -> Config:
    """Validate a plain mapping against the schema and return a :class:`Config`."""
    config = validate_schema(data)
    _check_model(config)
    return config


def config_to_dict(config) -> dict:
    """The config as plain YAML-serialisable containers."""
    return config.model_dump()


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into (["a", "b"], yaml-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {show(text)}: expected KEY=VALUE (e.g. train.epochs=5)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {show(text)}: empty key")
    try:
        value = _safe_load(raw, f"override {show(text)}") if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {show(text)}: value is not valid YAML ({' '.join(str(exc).split())})") from None
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
        model: Any = Config
        node = result
        for depth, part in enumerate(path):
            dotted = ".".join(path[: depth + 1])
            last = depth == len(path) - 1
            if model is not None:
                fields = model.model_fields
                if part not in fields:
                    raise ConfigError(f"unknown config key '{dotted}'{suggest_key(part, list(fields))}")
                nested = fields[part].annotation
                model = nested if isinstance(nested, type) and issubclass(nested, BaseModel) else None
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if child is None:
                    child = node[part] = {}
                if not isinstance(child, dict):
                    raise ConfigError(f"override {show(text)}: '{dotted}' is not a mapping")
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
