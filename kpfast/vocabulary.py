"""The ops' vocabulary, defined once: encodings, loss kinds, reductions and decode methods.

A name's integer code is its position in its tuple here. Everything else derives from this
module: the argument checks (kpfast/ops/_checks.py), the Triton kernels' constants
(kpfast/triton/gaussian.py, loss.py, decode.py), the reference's tables, the config's ``Literal``
types (kpfast/engine/config.py), and the tests' lists of every name. The C++ enums
(csrc/kpfast/gaussian.h, loss.h, decode.h) and decode.h's ``is_refined`` are written by hand and
must agree; tests/ops/test_vocabulary.py parses them and fails when any of these disagree.
docs/extending.md says how to add a name.

Standard library only: the kernel layer, the reference and the config all import it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Target encodings (docs/design.md, Op 1): where the Gaussian's centre sits and how far it reaches.
ENCODINGS = ("msra", "udp", "dark")


@dataclass(frozen=True)
class LossKind:
    """One loss kind of docs/design.md, Op 2, and the traits the checks, kernels and callers read."""

    name: str
    takes_logits: bool  # pred holds logits (p = sigmoid(z)): the predictor applies a sigmoid to decode
    default_alpha: float  # alpha means a different thing per kind (focal balance, cornernet exponent)
    alpha_at_most_one: bool  # alpha is a class balance, so in [0, 1]
    default_l1_weight: float  # the L1 term belongs to the focal preset (focal + 0.1 x L1)
    counts_positives: bool  # CenterNet normalisation: mean/sum divide by the number of positive pixels
    fused_gradient: bool  # the gradient-in-forward opt-in applies (kpfast/ops/_loss_registration.py)


LOSS_KIND_TRAITS = (
    LossKind("mse", takes_logits=False, default_alpha=0.0, alpha_at_most_one=False, default_l1_weight=0.0,
             counts_positives=False, fused_gradient=True),
    LossKind("focal", takes_logits=True, default_alpha=0.25, alpha_at_most_one=True, default_l1_weight=0.1,
             counts_positives=False, fused_gradient=True),
    LossKind("cornernet", takes_logits=True, default_alpha=2.0, alpha_at_most_one=False, default_l1_weight=0.0,
             counts_positives=True, fused_gradient=False),
)
LOSS_KINDS = tuple(kind.name for kind in LOSS_KIND_TRAITS)
LOGIT_LOSS_KINDS = tuple(kind.name for kind in LOSS_KIND_TRAITS if kind.takes_logits)
POSITIVE_COUNTING_LOSS_KINDS = tuple(kind.name for kind in LOSS_KIND_TRAITS if kind.counts_positives)
FUSED_GRADIENT_LOSS_KINDS = tuple(kind.name for kind in LOSS_KIND_TRAITS if kind.fused_gradient)

REDUCTIONS = ("mean", "sum", "none")

# Decoders (docs/design.md, Op 3). The refined ones take a Taylor step on the blurred map: their
# offset is unbounded, so every backend clips their points to the map (the C++ kernels through
# decode.h's is_refined, the Triton kernel through decode_config's CLIP), and only they read blur_kernel.
DECODE_METHODS = ("argmax", "quarter", "dark", "udp", "local_mean")
REFINED_DECODE_METHODS = ("dark", "udp")


def loss_kind(name: str) -> LossKind:
    """The traits of loss kind ``name`` (a ValueError naming ``kind`` when there is none)."""
    for kind in LOSS_KIND_TRAITS:
        if kind.name == name:
            return kind
    raise ValueError(f"kind: expected one of {LOSS_KINDS}, got {name!r}")


def codes(names: tuple[str, ...]) -> dict[str, int]:
    """``{name: integer code}``: the code every kernel uses is the name's position."""
    return {name: code for code, name in enumerate(names)}


ENCODING_CODES = codes(ENCODINGS)
LOSS_KIND_CODES = codes(LOSS_KINDS)
DECODE_METHOD_CODES = codes(DECODE_METHODS)
