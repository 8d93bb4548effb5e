"""kpfast.engine: the trainer (config, training loop, evaluation, checkpoints, reporting)."""

import kpfast._require_trainer  # noqa: F401  (one line when the trainer's packages are missing)
