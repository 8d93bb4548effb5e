"""The pieces every typed config section is built from (pydantic models), and the translation of
pydantic's ValidationError into kpfast's one-line ConfigError.

Each package owns its section (kpfast/data/config.py the ``data:`` section, kpfast/engine/config.py
the rest and the whole); this module is the shared vocabulary, so neither imports the other's
internals (docs/engine.md, "Configuration"). The kernel layer never imports it: pydantic is a
trainer dependency.
"""

from __future__ import annotations

import difflib
import re
import reprlib
import typing
from typing import Annotated, Any, Literal

import kpfast._require_trainer  # noqa: F401  (one line when the trainer's packages are missing)
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

__all__ = ["ConfigError", "FieldInvalid", "Section", "Float", "MUST_MATCH", "Registry", "field", "config_error",
           "not_empty", "resume_keys", "show", "suggest_key", "suggest_choice", "validate_section"]

class ConfigError(ValueError):
    """A config key is unknown, has the wrong type, or is out of range."""

class FieldInvalid(ValueError):
    """Raised by a section's validator: the check on ``field`` (a key of that section) failed.
    The key of the error becomes ``<section>.<field>`` although the validator sees the section."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field_name = field_name

# Marks a field whose change makes a checkpoint's model/optimizer/scheduler state unloadable or
# changes what it means: resuming with another value is refused (docs/training.md, "Resuming").
MUST_MATCH = {"resume": "must_match"}

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 120
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 3, 8, 8

def show(value) -> str:
    """``repr`` bounded in length and depth, for error messages about user values."""
    return _REPR.repr(value)

def suggest_key(key: str, valid) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"

def suggest_choice(value, choices) -> str:
    hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    return f"; did you mean '{hint[0]}'?" if hint else ""

_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

def _float_text(value):
    # YAML 1.1 reads 1e-3 (no dot) as a string; users mean the number.
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        return float(value)
    return value

# A float field: ints are accepted (and stored as float), bools and other text are not.
Float = Annotated[float, BeforeValidator(_float_text)]

def field(default: Any = ..., *, resume: bool = False, **kwargs):
    """``pydantic.Field`` with kpfast's markers: ``resume=True`` adds :data:`MUST_MATCH`; a list
    or dict default is copied per instance."""
    extra = dict(MUST_MATCH) if resume else None
    if isinstance(default, (list, dict)):
        value = default
        return Field(default_factory=lambda: typing.cast(Any, type(value))(value), json_schema_extra=extra, **kwargs)
    return Field(default, json_schema_extra=extra, **kwargs)

class Section(BaseModel):
    """A config section: strict types (no "5" for 5, no 1 for true), unknown keys refused, and a
    missing or ``null`` section meaning all defaults."""

    model_config = ConfigDict(strict=True, extra="forbid", validate_default=False)

    @model_validator(mode="before")
    @classmethod
    def _null_is_defaults(cls, data):
        return {} if data is None else data

def not_empty(value):
    """A section validator's check for text keys: ``None`` passes, blank text does not."""
    if value is not None and not str(value).strip():
        raise ValueError("must not be empty")
    return value


class Registry(dict):
    """Name -> factory, filled by a decorator; a config key naming an entry is checked with
    :meth:`check` (docs/data.md, "Datasets"; docs/training.md, "Learning-rate schedules")."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, name: str):
        """Decorator adding the function to the registry under ``name`` (a name only once)."""

        def add(function):
            if name in self:
                raise ValueError(f"register_{self.what}: {name!r} is already registered ({self[name].__qualname__})")
            self[name] = function
            return function

        return add

    def check(self, name):
        """``name`` when registered, else a ValueError listing the registered names."""
        if name not in self:
            raise ValueError(f"expected one of {sorted(self)}, got {name!r}{suggest_choice(name, self)}")
        return name


# --------------------------------------------------------------------------- schema walking

def _section_type(annotation) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None

def resume_keys(root: type[BaseModel], prefix: str = "") -> tuple[str, ...]:
    """The dotted keys of ``root`` whose fields carry :data:`MUST_MATCH`, in schema order."""
    keys = []
    for name, info in root.model_fields.items():
        dotted = f"{prefix}{name}"
        nested = _section_type(info.annotation)
        if nested is not None:
            keys.extend(resume_keys(nested, dotted + "."))
        elif (info.json_schema_extra or {}).get("resume") == "must_match":
            keys.append(dotted)
    return tuple(keys)

def _literal_choices(annotation) -> tuple:
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        choices = _literal_choices(arg)
        if choices:
            return choices
    return ()

def _resolve(root: type[BaseModel], loc: tuple) -> tuple[list[str], type[BaseModel] | None, Any]:
    """Walk an error location through the schema: (key parts, the model holding the last part,
    that field's FieldInfo or None). Parts that are not fields (pydantic's union tags) end it."""
    parts: list[str] = []
    model: type[BaseModel] | None = root
    holder, info = None, None
    for part in loc:
        if model is None or not isinstance(part, str):
            break
        holder, info = model, model.model_fields.get(part)
        parts.append(part)
        if info is None:  # an unknown key
            break
        model = _section_type(info.annotation)
    return parts, holder, info

_TYPE_NAMES = {"int_type": "int", "bool_type": "bool", "float_type": "float", "string_type": "str",
               "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
               "model_attributes_type": "a mapping"}
_BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
           "less_than_equal": ("<=", "le")}

def config_error(exc: ValidationError, root: type[BaseModel], prefix: str = "") -> ConfigError:
    """pydantic's first error as one line naming the dotted key, the expected and the actual value
    (docs/engine.md, "Configuration")."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    parts, holder, info = _resolve(root, first["loc"])
    key = prefix + ".".join(parts)
    kind, value = first["type"], first.get("input")
    got = f"got {type(value).__name__} {show(value)}"
    if kind == "extra_forbidden":
        valid = list(holder.model_fields) if holder is not None else []
        return ConfigError(f"unknown config key '{key}'{suggest_key(parts[-1], valid)}")
    if kind in _TYPE_NAMES:
        # A union (e.g. a mapping or a name) reports one error per member, all at this key.
        names = [_TYPE_NAMES[e["type"]] for e in errors
                 if e["type"] in _TYPE_NAMES and _resolve(root, e["loc"])[0] == parts]
        expected = " or ".join(dict.fromkeys(names))
        return ConfigError(f"{key or 'config'}: expected {expected}, {got}")
    if kind == "literal_error":
        choices = _literal_choices(info.annotation) if info is not None else ()
        return ConfigError(f"{key}: expected one of {list(choices)}, got {show(value)}{suggest_choice(value, choices)}")
    if kind in _BOUNDS:
        symbol, name = _BOUNDS[kind]
        return ConfigError(f"{key}: must be {symbol} {first['ctx'][name]}, got {show(value)}")
    error = (first.get("ctx") or {}).get("error")
    if isinstance(error, FieldInvalid):
        return ConfigError(f"{key}.{error.field_name}: {error}" if key else f"{error.field_name}: {error}")
    if isinstance(error, Exception):
        return ConfigError(f"{key or 'config'}: {error}")
    return ConfigError(f"{key or 'config'}: {first['msg']}, {got}")

def validate_section(model: type[BaseModel], data, prefix: str = ""):
    """``model.model_validate(data)`` with a ValidationError turned into one ConfigError line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, model, prefix) from None

