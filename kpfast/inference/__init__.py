"""Running a trained model: the top-down :class:`Predictor` every caller uses (evaluation,
validation images, ``kpfast.eval``, ``kpfast.predict``). Imports nothing from kpfast.engine."""

from kpfast.inference.autocast import autocast_context
from kpfast.inference.predictor import CropPrediction, Predictor

__all__ = ["Predictor", "CropPrediction", "autocast_context"]
