"""Pretrained weights: the Lite-HRNet checkpoints people have, loaded into kpfast's network.

kpfast's :class:`~kpfast.models.PoseModel` has MMPose's module names (``backbone.*`` for
Lite-HRNet, ``head.final_layer.*`` for its HeatmapHead) and computes the same heatmaps from the
same weights, so the published checkpoints need only their container unwrapped and, for the
older layouts, the head renamed (docs/pretrained.md):

=================  ===========================================================================
format             what the file holds
=================  ===========================================================================
``mmpose-1.x``     ``{"meta", "state_dict"}``: ``backbone.*``, ``head.*`` (``data_preprocessor.*``
                   is the normalisation, which kpfast's data pipeline does: ignored)
``mmpose-0.x``     ``{"meta", "state_dict"}``: ``backbone.*``, ``keypoint_head.*`` (also the
                   official Lite-HRNet repository's files, which MMPose 0.x wrote)
``kpfast``         a ``python -m kpfast.train`` checkpoint: ``config``, ``model``, ``ema``, ... (its
                   EMA weights when it has them, as evaluation uses)
``state_dict``     a bare state dict in any of the key layouts above (``module.`` prefixes of a
                   DistributedDataParallel model removed)
=================  ===========================================================================

Files load with ``torch.load(weights_only=True)``. The preset is inferred from the weights'
shapes when not given. Loading is strict: a mismatch names every missing, unexpected and
differently shaped key in one message. Fine-tuning on another keypoint set
(``num_keypoints`` different from the file's) re-initialises what cannot be loaded, the heads,
and says so in the returned :class:`LoadReport`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .pose_model import PoseModel
from .presets import PRESETS, build_model

__all__ = ["KNOWN_WEIGHTS", "KnownWeights", "LoadReport", "PretrainedError", "fetch_weights", "infer_preset",
           "known_weights", "load_into", "load_pretrained", "load_weights_file", "read_state_dict"]


@dataclasses.dataclass(frozen=True)
class KnownWeights:
    """A published checkpoint: where it is, the start of its SHA-256 (the published file name's
    8 hex digits), what it is, and the COCO val2017 AP it was published with (detector boxes,
    flip test)."""

    url: str
    sha256_prefix: str
    preset: str
    input_size: tuple[int, int]  # (H, W)
    published_ap: float

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_MMPOSE = "https://download.openmmlab.com/mmpose/top_down/litehrnet/"
# MMPose's model zoo (configs/body_2d_keypoint/topdown_heatmap/coco/litehrnet_coco.md).
KNOWN_WEIGHTS = {
    "litehrnet_18_coco_256x192": KnownWeights(_MMPOSE + "litehrnet18_coco_256x192-6bace359_20211230.pth", "6bace359",
                                              "litehrnet_18", (256, 192), 0.642),
    "litehrnet_18_coco_384x288": KnownWeights(_MMPOSE + "litehrnet18_coco_384x288-8d4dac48_20211230.pth", "8d4dac48",
                                              "litehrnet_18", (384, 288), 0.676),
    "litehrnet_30_coco_256x192": KnownWeights(_MMPOSE + "litehrnet30_coco_256x192-4176555b_20210626.pth", "4176555b",
                                              "litehrnet_30", (256, 192), 0.676),
    "litehrnet_30_coco_384x288": KnownWeights(_MMPOSE + "litehrnet30_coco_384x288-a3aef5c4_20210626.pth", "a3aef5c4",
                                              "litehrnet_30", (384, 288), 0.700),
}
# The most a weights download may write: Lite-HRNet checkpoints are a few MB, so a server sending
# more (or no Content-Length and no end) is stopped here, not at a full disk.
MAX_WEIGHTS_BYTES = 256 << 20

# Keys of an MMPose 1.x model that are not network weights: the data preprocessor's mean/std.
_IGNORED_PREFIXES = ("data_preprocessor.",)
# Old head names -> kpfast's (MMPose 1.x's) ``head``.
_HEAD_ALIASES = ("keypoint_head.",)
# Modules a fine-tune on another keypoint set re-initialises: their shapes follow num_keypoints.
_KEYPOINT_HEADS = ("head.", "visibility_head.")


class PretrainedError(ValueError):
    """A weights file that cannot be read, or whose weights do not fit the network."""


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_pretrained` did: the file's format, the network it built, and what was not
    taken from the file (``reinitialised``: keys of the network left at their initialisation,
    ``ignored``: keys of the file not used)."""

    source: str
    format: str
    preset: str | None
    num_keypoints: int
    reinitialised: list[str] = dataclasses.field(default_factory=list)
    ignored: list[str] = dataclasses.field(default_factory=list)
    visibility_head: bool = False
    overrides: dict = dataclasses.field(default_factory=dict)  # LiteHRNetConfig overrides of the network built
    stored_config: dict | None = None  # a kpfast checkpoint's whole stored config (None for other formats)

    def summary(self) -> str:
        text = f"{self.source}: {self.format} weights, {self.preset or 'custom network'}, {self.num_keypoints} keypoints"
        if self.reinitialised:
            text += f"; re-initialised (not in the file, or another shape): {', '.join(self.reinitialised)}"
        if self.ignored:
            text += f"; ignored: {', '.join(self.ignored)}"
        return text


def load_weights_file(path) -> object:
    """The object a weights file holds, read with ``torch.load(weights_only=True)``; one
    PretrainedError naming the file when it is missing or not such a file."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PretrainedError(f"weights: no such file {str(path)!r}") from None
    except Exception as error:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PretrainedError(f"weights: {path} is not a checkpoint torch.load(weights_only=True) reads "
                              f"({type(error).__name__}: {first})") from None


def _strip_prefix(state: Mapping, prefix: str) -> dict:
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _as_state_dict(value: object, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(value, Mapping) or not value:
        raise PretrainedError(f"weights: {where} is not a state dict (a mapping of names to tensors), "
                              f"got {type(value).__name__}")
    bad = [k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise PretrainedError(f"weights: {where} is not a state dict: {len(bad)} entries are not name -> tensor "
                              f"(first: {bad[0]!r})")
    return _strip_prefix(value, "module.")


def read_state_dict(checkpoint: object, source: str = "checkpoint", weights: str = "auto"
                    ) -> tuple[dict[str, torch.Tensor], str, dict | None]:
    """(state dict in kpfast's keys, format name, the stored kpfast model config or None) of a loaded
    ``checkpoint`` object (see the module docstring for the formats). ``weights``: for kpfast
    checkpoints, "auto" (EMA when present), "ema" or "model"."""
    if weights not in ("auto", "ema", "model"):
        raise ValueError(f"weights: expected 'auto', 'ema' or 'model', got {weights!r}")
    model_config = None
    if isinstance(checkpoint, Mapping) and "model" in checkpoint and "config" in checkpoint:
        ema = checkpoint.get("ema")
        if weights == "ema" and not ema:
            raise PretrainedError(f"weights: 'ema' requested but {source} has no EMA weights")
        raw = ema["module"] if weights in ("auto", "ema") and ema else checkpoint["model"]
        stored = checkpoint["config"]
        model_config = stored.get("model") if isinstance(stored, Mapping) else None
        return _as_state_dict(raw, source), "kpfast", model_config
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        state = _as_state_dict(checkpoint["state_dict"], f"{source}['state_dict']")
        old = any(k.startswith(_HEAD_ALIASES) for k in state)
        return _rename_heads(state), ("mmpose-0.x" if old else "mmpose-1.x"), None
    state = _as_state_dict(checkpoint, source)
    return _rename_heads(state), "state_dict", None


def _rename_heads(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        for alias in _HEAD_ALIASES:
            if key.startswith(alias):
                key = "head." + key[len(alias):]
        out[key] = value
    return out


def _head_keypoints(state: Mapping) -> int | None:
    weight = state.get("head.final_layer.weight")
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.dim() >= 1 else None


def _shapes(module: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def infer_preset(state: Mapping[str, torch.Tensor]) -> str:
    """The preset whose network has exactly ``state``'s keys and shapes (heads excluded)."""
    wanted = {k: tuple(v.shape) for k, v in state.items() if k.startswith("backbone.")}
    if not wanted:
        raise PretrainedError("weights: no backbone.* keys: not a Lite-HRNet pose model's state dict")
    for name in sorted(PRESETS):
        backbone = {k: s for k, s in _shapes(build_model(name)).items() if k.startswith("backbone.")}
        if backbone == wanted:
            return name
    raise PretrainedError(f"weights: their backbone ({len(wanted)} tensors) matches no preset "
                          f"({', '.join(sorted(PRESETS))}); pass the preset and its overrides explicitly")


def _check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], reinit: tuple[str, ...],
                source: str) -> tuple[dict, list[str], list[str]]:
    """(what loads, re-initialised model keys, ignored file keys); raises one message for every
    missing, unexpected or differently shaped key outside ``reinit`` and the ignored prefixes."""
    own = _shapes(model)
    missing = [k for k in own if k not in state and not k.startswith(reinit)]
    unexpected = [k for k in state if k not in own and not k.startswith(_IGNORED_PREFIXES + reinit)]
    shaped = [f"{k} (file {tuple(state[k].shape)}, network {own[k]})" for k in own
              if k in state and tuple(state[k].shape) != own[k] and not k.startswith(reinit)]
    if missing or unexpected or shaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("differently shaped", shaped)):
            if keys:
                parts.append(f"{len(keys)} {label}: {', '.join(keys)}")
        raise PretrainedError(f"weights: {source} does not fit the network: " + "; ".join(parts))
    loadable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == own[k]}
    reinitialised = [k for k in own if k not in loadable]
    ignored = [k for k in state if k not in loadable]
    return loadable, reinitialised, ignored


def known_weights(source) -> KnownWeights | None:
    """The :data:`KNOWN_WEIGHTS` entry that ``source`` names: its name, its URL, or a path to its
    published file name (a downloaded copy); None for anything else."""
    text = str(source)
    if text in KNOWN_WEIGHTS:
        return KNOWN_WEIGHTS[text]
    name = text.rsplit("/", 1)[-1].split("?")[0]
    return next((k for k in KNOWN_WEIGHTS.values() if text == k.url or name == k.filename), None)


def weights_cache() -> Path:
    """Where downloaded weights are kept: torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch_weights(source: str, *, progress: bool = True) -> Path:
    """The local file for ``source``: a name of :data:`KNOWN_WEIGHTS` or an http(s) URL, downloaded
    into :func:`weights_cache` (resumed when interrupted, a known file checked against its SHA-256
    prefix, a URL's file against the 8 hex digits its name carries after a ``-`` as published
    checkpoints do); anything else is a path, returned as it is."""
    from kpfast.data.download import DownloadError, download_file

    known = KNOWN_WEIGHTS.get(source)
    if known is not None:
        url, prefix = known.url, known.sha256_prefix
    elif source.startswith(("http://", "https://")):
        url = source
        stem = url.rsplit("/", 1)[-1].split("?")[0].rsplit(".", 1)[0]
        match = re.search(r"-([0-9a-f]{8,64})(?:_|$)", stem)
        prefix = match.group(1) if match else None
    else:
        return Path(source)
    name = url.rsplit("/", 1)[-1].split("?")[0]
    if not name or name in (".", ".."):
        raise PretrainedError(f"weights: {url} names no file")
    try:
        return download_file(url, weights_cache() / name, sha256_prefix=prefix, limit=MAX_WEIGHTS_BYTES,
                             progress=progress)
    except (DownloadError, FileExistsError, OSError) as error:
        raise PretrainedError(f"weights: {error}") from None


def load_pretrained(source, *, preset: str | None = None, num_keypoints: int | None = None,
                    visibility_head: bool | None = None, weights: str = "auto", overrides: Mapping | None = None,
                    ) -> tuple[PoseModel, LoadReport]:
    """Build the network a weights file holds and load it: ``(model, report)``.

    Args:
        source: a name of :data:`KNOWN_WEIGHTS` or an http(s) URL (downloaded once into torch
            hub's cache, see :func:`fetch_weights`), a path to a weights file (see the module
            docstring for the formats), or an already loaded checkpoint object (a mapping).
        preset: the :data:`~kpfast.models.PRESETS` name; inferred from the weights' shapes when
            None (a kpfast checkpoint names its own).
        num_keypoints: the head's keypoints; default the file's. Another number re-initialises the
            heads (fine-tuning on another keypoint set); the report lists them.
        visibility_head: build the visibility head (default: when the file has one).
        weights: kpfast checkpoints: "auto" (EMA when present), "ema" or "model".
        overrides: LiteHRNetConfig overrides for a custom network (with ``preset``).
    """
    if isinstance(source, (str, os.PathLike)):
        label = str(source)
        path = fetch_weights(source) if isinstance(source, str) else Path(source)
        checkpoint = load_weights_file(path)
    else:
        label, checkpoint = "checkpoint", source
    state, fmt, stored = read_state_dict(checkpoint, label, weights)
    stored_config = None
    if fmt == "kpfast" and isinstance(checkpoint["config"], Mapping):
        stored_config = dict(checkpoint["config"])
    given = dict(overrides or {})
    overrides = given
    if stored is not None and preset is None:  # a kpfast checkpoint names its network
        preset = stored.get("name")
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(stored.get("overrides") or {}).items()}
        overrides.update(given)
    if preset is None:
        preset = infer_preset(state)
    file_keypoints = _head_keypoints(state)
    if num_keypoints is None:
        if file_keypoints is None:
            raise PretrainedError(f"weights: {label} has no head.final_layer.weight; pass num_keypoints")
        num_keypoints = file_keypoints
    if visibility_head is None:
        visibility_head = any(k.startswith("visibility_head.") for k in state)
    overrides.pop("gradient_checkpointing", None)
    model = build_model(preset, num_keypoints=num_keypoints, visibility_head=visibility_head, **overrides)
    built = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}
    reinit = _KEYPOINT_HEADS if num_keypoints != file_keypoints else ()
    if visibility_head and not any(k.startswith("visibility_head.") for k in state):
        reinit = tuple(sorted(set(reinit) | {"visibility_head."}))
    loadable, reinitialised, ignored = _check_fits(model, state, reinit, label)
    model.load_state_dict(loadable, strict=False)
    return model, LoadReport(label, fmt, preset, num_keypoints, reinitialised, ignored, bool(visibility_head),
                             built, stored_config)


def load_into(model: PoseModel, source, *, preset: str, overrides: Mapping | None = None,
              weights: str = "auto") -> LoadReport:
    """Fine-tuning's start: ``model`` (a :class:`PoseModel` of ``preset`` built with
    ``overrides``) takes its weights from ``source`` (as :func:`load_pretrained` reads it); what
    the file cannot give (the heads, for another keypoint count) keeps ``model``'s own
    initialisation and is listed in the report. Any other mismatch raises one PretrainedError."""
    built = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(overrides or {}).items()
             if k != "gradient_checkpointing"}
    loaded, report = load_pretrained(source, preset=preset, num_keypoints=model.num_keypoints,
                                     visibility_head=model.visibility_head is not None, weights=weights,
                                     overrides=built)
    taken = {k: v for k, v in loaded.state_dict().items() if k not in report.reinitialised}
    result = model.load_state_dict(taken, strict=False)
    if result.unexpected_keys or sorted(result.missing_keys) != sorted(report.reinitialised):
        raise PretrainedError(f"weights: {report.source} built another network than the one given "
                              f"(missing {result.missing_keys}, unexpected {result.unexpected_keys})")
    return report
