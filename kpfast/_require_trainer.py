"""Imported first by the trainer's modules (before cv2, albumentations, ...): stops with one line
naming what is missing when kpfast was installed without its dependencies (kpfast/_dependencies.py)."""

from kpfast._dependencies import require

require("this part of kpfast (the trainer, its data loaders and commands)")
