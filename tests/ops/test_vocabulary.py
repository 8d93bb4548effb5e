"""The ops' vocabulary is defined once (kpfast/vocabulary.py) and every other copy agrees with it:
the C++ enums and their string tables (csrc/kpfast/*.h), the Triton kernels' constants, the
reference's per-name tables, the config's types and the schema's argument lists
(docs/extending.md lists these as the places a new name goes)."""

import importlib.util
import re
import typing
from pathlib import Path

import pytest
import torch

from kpfast import backends, vocabulary
from kpfast.ops import _inputs
from kpfast.ops import decode as decode_op
from kpfast.reference import decode as reference_decode
from kpfast.reference import loss as reference_loss

CSRC = Path(__file__).resolve().parents[2] / "csrc"
# vocabulary tuple -> (header, C++ enum, the argument name of its *_from_string check)
CPP_ENUMS = {
    "ENCODINGS": ("kpfast/gaussian.h", "Encoding", "encoding"),
    "LOSS_KINDS": ("kpfast/loss.h", "LossKind", "kind"),
    "DECODE_METHODS": ("kpfast/decode.h", "DecodeMethod", "method"),
}
HAS_TRITON = importlib.util.find_spec("triton") is not None


def cpp_enum(header: str, enum: str) -> dict[str, int]:
    """``{lower-case name: code}`` of ``enum class <enum> : int { A = 0, ... };`` in ``header``."""
    text = (CSRC / header).read_text()
    match = re.search(rf"enum class {enum}\s*:\s*int\s*\{{([^}}]*)\}}", text)
    assert match, f"{header}: no `enum class {enum} : int {{...}}`"
    entries = [entry.split("=") for entry in match.group(1).split(",") if entry.strip()]
    assert all(len(entry) == 2 for entry in entries), f"{enum}: every enumerator needs an explicit code"
    return {name.strip().lower(): int(code) for name, code in entries}


def cpp_string_table(enum: str) -> tuple[dict[str, str], str]:
    """The string -> enumerator lines of checks.h's ``<enum>_from_string`` and its error message."""
    text = (CSRC / "kpfast/checks.h").read_text()
    pairs = dict(re.findall(rf'if \(name == "(\w+)"\) return {enum}::(\w+);', text))
    return {name: member.lower() for name, member in pairs.items()}, text


@pytest.mark.parametrize("vocabulary_name", sorted(CPP_ENUMS))
def test_cpp_enums_give_every_name_its_vocabulary_code(vocabulary_name):
    names = getattr(vocabulary, vocabulary_name)
    header, enum, argument = CPP_ENUMS[vocabulary_name]
    assert cpp_enum(header, enum) == {name: code for code, name in enumerate(names)}
    table, text = cpp_string_table(enum)
    assert table == {name: name for name in names}, f"checks.h's {enum} string table"
    listed = ", ".join(f"'{name}'" for name in names)
    assert f'"{argument} must be one of {listed}' in text, f"checks.h's {argument} error message"


def test_codes_are_positions_and_traits_are_consistent():
    # The rules, not their current values, so that a new name changes nothing here.
    for names, codes in ((vocabulary.ENCODINGS, vocabulary.ENCODING_CODES),
                         (vocabulary.LOSS_KINDS, vocabulary.LOSS_KIND_CODES),
                         (vocabulary.DECODE_METHODS, vocabulary.DECODE_METHOD_CODES)):
        assert codes == {name: code for code, name in enumerate(names)}
    traits = vocabulary.LOSS_KIND_TRAITS
    assert vocabulary.LOSS_KINDS == tuple(kind.name for kind in traits)
    assert vocabulary.LOGIT_LOSS_KINDS == tuple(kind.name for kind in traits if kind.takes_logits)
    assert vocabulary.POSITIVE_COUNTING_LOSS_KINDS == tuple(kind.name for kind in traits if kind.counts_positives)
    assert vocabulary.FUSED_GRADIENT_LOSS_KINDS == tuple(kind.name for kind in traits if kind.fused_gradient)
    # fused_gradient needs the mean/sum upstream before the forward: not known for a kind that
    # counts positives (kpfast/ops/_loss_registration.py)
    assert not [kind.name for kind in traits if kind.fused_gradient and kind.counts_positives]
    assert set(vocabulary.REFINED_DECODE_METHODS) <= set(vocabulary.DECODE_METHODS)
    for names in (vocabulary.ENCODINGS, vocabulary.LOSS_KINDS, vocabulary.DECODE_METHODS, vocabulary.REDUCTIONS):
        assert len(set(names)) == len(names)
    with pytest.raises(ValueError, match=re.escape(f"kind: expected one of {vocabulary.LOSS_KINDS}, got 'l2'")):
        vocabulary.loss_kind("l2")


def test_cpp_refined_methods_are_the_vocabulary():
    """decode.h's is_refined (the kernels' clip to the map) names exactly REFINED_DECODE_METHODS."""
    text = (CSRC / "kpfast/decode.h").read_text()
    match = re.search(r"constexpr bool is_refined\(DecodeMethod method\) \{\s*return ([^;]*);", text)
    assert match, "decode.h: no `constexpr bool is_refined(DecodeMethod method) { return ...; }`"
    terms = [term.strip() for term in match.group(1).split("||")]
    named = [re.fullmatch(r"method == DecodeMethod::(\w+)", term) for term in terms]
    assert all(named), f"decode.h's is_refined: expected `method == DecodeMethod::NAME || ...`, got {terms}"
    refined = sorted(m.group(1).lower() for m in named)
    assert refined == sorted(vocabulary.REFINED_DECODE_METHODS), \
        f"decode.h's is_refined names {refined}, REFINED_DECODE_METHODS is {vocabulary.REFINED_DECODE_METHODS}"


def test_docstrings_describe_every_name():
    """The op docstrings describe each kind / method in a line of its own: a new name needs its line."""
    from kpfast.ops import heatmap_loss

    missing = [kind for kind in vocabulary.LOSS_KINDS if f'* ``"{kind}"``' not in heatmap_loss.__doc__]
    assert not missing, f"kpfast/ops/loss.py heatmap_loss docstring: no formula for {missing}"
    missing = [method for method in vocabulary.DECODE_METHODS
               if f'``"{method}"`` (' not in decode_op.decode_heatmaps.__doc__]
    assert not missing, f"kpfast/ops/decode.py decode_heatmaps docstring: no description of {missing}"


def test_reference_tables_cover_exactly_the_vocabulary():
    assert tuple(reference_loss.PIXEL_LOSSES) == vocabulary.LOSS_KINDS
    assert tuple(reference_decode.OFFSETS) == vocabulary.DECODE_METHODS
    assert decode_op.DECODE_METHODS == vocabulary.DECODE_METHODS


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_triton_constants_are_the_vocabulary_codes():
    from kpfast.triton import decode, gaussian, loss

    assert gaussian.ENCODINGS == vocabulary.ENCODING_CODES
    assert loss.KINDS == vocabulary.LOSS_KIND_CODES
    assert decode.METHODS == vocabulary.DECODE_METHOD_CODES
    # Each named constant the kernels compare against (NAME for the name "name"; a kind or method
    # that falls to a final else has none) holds its name's code.
    checked = 0
    for module, codes in ((gaussian, vocabulary.ENCODING_CODES), (loss, vocabulary.LOSS_KIND_CODES),
                          (decode, vocabulary.DECODE_METHOD_CODES)):
        for name, code in codes.items():
            constant = getattr(module, name.upper(), None)
            if constant is not None:
                assert constant.value == code, f"{module.__name__}.{name.upper()}"
                checked += 1
    assert checked >= 9  # msra udp dark, mse focal, quarter dark udp local_mean: the lookup finds them
    assert decode.decode_config(8, 8, "udp", 11, 3)["CLIP"] and not decode.decode_config(8, 8, "argmax", 11, 3)["CLIP"]
    # per-kind launch tables: a new kind must choose its tile (tools/triton_aot.py checks for spills)
    assert set(loss.TILE_BY_KIND) == set(vocabulary.LOSS_KINDS)


def test_config_types_are_the_vocabulary():
    config = pytest.importorskip("kpfast.engine.config")
    loss_hints = typing.get_type_hints(config.LossConfig)
    assert typing.get_args(loss_hints["kind"]) == vocabulary.LOSS_KINDS
    assert typing.get_args(loss_hints["encoding"]) == vocabulary.ENCODINGS
    assert typing.get_args(typing.get_type_hints(config.EvalConfig)["decoder"]) == vocabulary.DECODE_METHODS


def schema_arguments(op_name: str) -> list[str]:
    """The argument names of ``op_name`` in csrc/library.cpp's schema."""
    text = (CSRC / "library.cpp").read_text()
    joined = re.sub(r'"\s*\n\s*"', "", text)  # the schema strings are split over lines
    match = re.search(rf'm\.def\("{op_name}\(([^)]*)\)', joined)
    assert match, op_name
    return [argument.split()[-1] for argument in match.group(1).split(",")]


def test_inputs_objects_give_the_schemas_argument_lists():
    keypoints = torch.rand(2, 3, 2) * 8
    maps = torch.rand(2, 3, 9, 8)
    options = _inputs.LossOptions.build("cornernet")
    built = {
        "render_heatmaps": _inputs.RenderInputs.build(keypoints, None, (9, 8), 2.0, "udp", torch.float32),
        "heatmap_loss": _inputs.LossInputs.build(maps, keypoints, None, 2.0, "dark", options),
        "decode_heatmaps": _inputs.DecodeInputs.build(maps, "udp", 5, 3),
        "soft_argmax": _inputs.SoftArgmaxInputs.build(maps, 2.0),
        "find_peaks": _inputs.PeakInputs.build(maps, 0.1, 2, 4),
    }
    for op_name, inputs in built.items():
        args = inputs.kernel_args()
        assert len(args) == len(schema_arguments(op_name)), op_name
    loss_args = dict(zip(schema_arguments("heatmap_loss"), built["heatmap_loss"].kernel_args()))
    assert loss_args["kind"] == "cornernet" and loss_args["encoding"] == "dark"
    assert loss_args["alpha"] == 2.0 and loss_args["l1_weight"] == 0.0  # cornernet's defaults
    assert loss_args["weights"] is None and loss_args["sigma"] is None and loss_args["sigma_value"] == 2.0
    decode_args = dict(zip(schema_arguments("decode_heatmaps"), built["decode_heatmaps"].kernel_args()))
    assert (decode_args["method"], decode_args["blur_kernel"], decode_args["window"]) == ("udp", 5, 3)


def test_not_supported_reasons_name_every_reason():
    missing = backends.OpBackends("probe", implementations={"torch": None})
    assert missing.not_supported_reasons("cuda", torch.device("cpu")) == ["cuda: probe has no cuda implementation"]
    maps = _inputs.SoftArgmaxInputs.build(torch.rand(1, 2, 4, 4, dtype=torch.float64), 1.0)
    op = decode_op.SOFT_ARGMAX
    assert op.not_supported_reasons("torch", maps.device, maps) == []
    if not (HAS_TRITON and backends.triton_interpreting()):
        pytest.skip("the triton reasons below need triton's interpreter on CPU (tests/conftest.py sets it)")
    # the device is fine under the interpreter: only the dtype is not, and only given the inputs
    assert op.not_supported_reasons("triton", maps.device, maps) == [
        "triton: computes in float32 only, heatmaps are torch.float64"]
    assert op.not_supported_reasons("triton", maps.device) == []
    with pytest.raises(backends.BackendUnavailableError,
                       match=r"soft_argmax: backend 'triton' cannot run these inputs: triton: computes in float32"):
        op.select("triton", maps.device, maps)
