"""A checkpoint whose weights do not fit its config or --config: one line from predict, eval and
export naming what differs, never a load_state_dict traceback (docs/files.md, "Errors")."""

import cv2
import numpy as np
import pytest

from kpfast import eval as eval_cli
from kpfast import export as export_cli
from kpfast import predict as predict_cli
from kpfast.cli import run_cli
from .helpers import one_line_error
from .test_cli_faults import _tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.mark.parametrize("command", ["predict", "eval", "export"])
def test_weights_that_do_not_fit_the_config_are_one_line(checkpoint, tmp_path, command, capsys):
    image = tmp_path / "x.jpg"
    cv2.imwrite(str(image), np.zeros((20, 20, 3), np.uint8))
    wider = ["--set", "model.overrides={base_width: 16, num_branches: 2, num_modules: [1, 1, 1], stem_channels: 8}"]
    if command == "predict":
        code = run_cli(predict_cli.main, ["--checkpoint", str(checkpoint), str(image), "--output-dir",
                                          str(tmp_path / "out"), "--device", "cpu", *wider])
    elif command == "eval":
        code = run_cli(eval_cli.main, ["--checkpoint", str(checkpoint), "--device", "cpu", *wider])
    else:
        from kpfast.engine.checkpointer import load_checkpoint, save_checkpoint

        state = load_checkpoint(checkpoint)
        state["model"] = {k: v for k, v in list(state["model"].items())[:-1]}  # a weight missing
        broken = tmp_path / "broken.pt"
        save_checkpoint(state, broken)
        code = run_cli(export_cli.main, ["--checkpoint", str(broken), "--output", str(tmp_path / "m.onnx")])
    assert code == 2
    one_line_error(capsys, "do not fit")
