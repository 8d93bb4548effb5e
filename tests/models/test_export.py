"""torch.compile(fullgraph=True) and ONNX export."""

from __future__ import annotations

import importlib.util
import io

import pytest
import torch
from model_helpers import randomize

from kpfast.models import build_model

SMALL = dict(num_modules=(1, 1, 1), num_blocks=(1, 1, 1), base_width=16, stem_channels=16)


@pytest.mark.slow
def test_compile_fullgraph_matches_eager():
    model = randomize(build_model("litehrnet_18", visibility_head=True, **SMALL)).eval()
    images = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    with torch.no_grad():
        expected = model(images)
        got = compiled(images)
    torch.testing.assert_close(got["heatmaps"], expected["heatmaps"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["visibility"], expected["visibility"], rtol=1e-4, atol=1e-5)
    assert expected["heatmaps"].abs().mean() > 0.01


@pytest.mark.slow
def test_compile_fullgraph_training_step_with_checkpointing():
    model = randomize(build_model("naive_litehrnet_18", gradient_checkpointing=True, **SMALL)).train()
    reference = randomize(build_model("naive_litehrnet_18", **SMALL)).train()
    images = torch.randn(2, 3, 32, 64)
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    compiled(images)["heatmaps"].square().mean().backward()
    reference(images)["heatmaps"].square().mean().backward()
    ref_grads = {n: p.grad for n, p in reference.named_parameters()}
    # Tolerance relative to the largest gradient: some gradients are exactly 0 in exact
    # arithmetic (e.g. the bias of a BN followed by conv + training-mode BN) and are pure
    # rounding noise in both runs, so a per-element relative comparison would be meaningless.
    scale = max(g.abs().max().item() for g in ref_grads.values())
    for name, p in model.named_parameters():
        # Inductor reorders float32 reductions (training-mode BN statistics), which moves the
        # gradients by ~1e-4 of their scale through this randomly weighted network.
        torch.testing.assert_close(p.grad, ref_grads[name], rtol=1e-3, atol=1e-3 * scale)
    # BN running statistics move once per step, as in eager mode without checkpointing.
    ref_buffers = dict(reference.named_buffers())
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(buffer, ref_buffers[name], rtol=1e-4, atol=1e-4)


def _onnx_export(model, images, buffer):
    kwargs = dict(input_names=["images"], output_names=["heatmaps", "visibility"], opset_version=17)
    try:
        torch.onnx.export(model, (images,), buffer, dynamo=False, **kwargs)
    except TypeError:  # torch without the `dynamo` switch: the legacy exporter is the default
        torch.onnx.export(model, (images,), buffer, **kwargs)


def test_onnx_export():
    onnx = pytest.importorskip("onnx")
    model = randomize(build_model("litehrnet_18", visibility_head=True, **SMALL)).eval()
    images = torch.randn(1, 3, 64, 96)
    buffer = io.BytesIO()
    try:
        _onnx_export(model, images, buffer)
    except (ImportError, ModuleNotFoundError) as error:
        pytest.skip(f"ONNX exporter dependency missing: {error}")
    graph = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(graph)
    outputs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.graph.output}
    assert outputs == {"heatmaps": [1, 17, 16, 24], "visibility": [1, 17]}
    ops = {node.op_type for node in graph.graph.node}
    assert {"Conv", "Sigmoid", "Resize"} <= ops
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
        heatmaps, visibility = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            expected = model(images)
        torch.testing.assert_close(torch.from_numpy(heatmaps), expected["heatmaps"], rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(torch.from_numpy(visibility), expected["visibility"], rtol=1e-3, atol=1e-4)


def test_export_output_is_never_the_checkpoint(tmp_path):
    from kpfast.export import resolve_output

    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"checkpoint")
    assert resolve_output(ck, None) == tmp_path / "ck.onnx"
    assert resolve_output(ck, tmp_path / "m.onnx") == tmp_path / "m.onnx"
    (tmp_path / "hard.onnx").hardlink_to(ck)
    for output in (ck, tmp_path / "." / "ck.pt", tmp_path / "hard.onnx"):
        with pytest.raises(ValueError, match="is the checkpoint"):
            resolve_output(ck, output)
    onnx_named = tmp_path / "model.onnx"
    onnx_named.write_bytes(b"checkpoint")
    with pytest.raises(ValueError, match="default output .* is the checkpoint"):
        resolve_output(onnx_named, None)
    with pytest.raises(ValueError, match="is a directory"):
        resolve_output(ck, tmp_path)
    assert ck.read_bytes() == b"checkpoint"


def test_export_output_is_never_the_config_file(tmp_path):
    from kpfast import export as export_cli

    ck, config = tmp_path / "ck.pt", tmp_path / "my.yaml"
    ck.write_bytes(b"checkpoint")
    config.write_text("train: {epochs: 1}\n")
    with pytest.raises(ValueError, match="is the --config file"):
        export_cli.resolve_output(ck, config, config)
    with pytest.raises(ValueError, match="is the --config file"):  # refused before anything is read
        export_cli.main(["--checkpoint", str(ck), "--config", str(config), "--output", str(config)])
    assert config.read_text() == "train: {epochs: 1}\n" and ck.read_bytes() == b"checkpoint"
