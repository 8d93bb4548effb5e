"""load_pretrained: checkpoints in MMPose 1.x / 0.x, kpfast and bare state-dict layouts, generated
here with those key layouts and file structures, load strictly into kpfast's network."""

import hashlib
from collections import OrderedDict

import pytest
import torch

from kpfast.models import build_model
from kpfast.models.pretrained import PretrainedError, infer_preset, load_pretrained

SIZE = (64, 32)


def _randomised(name="litehrnet_18", num_keypoints=17, seed=0):
    """A network whose every tensor differs from a fresh build (weights and BN statistics)."""
    model = build_model(name, num_keypoints=num_keypoints)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=generator) * 0.2 + (0.5 if "running_var" in key else 0))
    return model.eval()


def _heatmaps(model, seed=1):
    images = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(images)["heatmaps"]


def _mmpose_1x(model):
    state = OrderedDict(model.state_dict())
    state["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    state["data_preprocessor.std"] = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    meta = {"mmengine_version": "0.10.4", "mmpose_version": "1.3.2", "epoch": 210, "iter": 300000,
            "dataset_meta": {"dataset_name": "coco", "num_keypoints": 17, "flip_indices": list(range(17))}}
    return {"meta": meta, "state_dict": state}


def _mmpose_0x(model):
    state = OrderedDict((k.replace("head.", "keypoint_head.", 1) if k.startswith("head.") else k, v)
                        for k, v in model.state_dict().items())
    return {"meta": {"mmcv_version": "1.3.8", "epoch": 210, "time": "Wed Jun 23 2021"}, "state_dict": state}


def _kpfast(model, ema_model):
    config = {"model": {"name": "litehrnet_18", "num_keypoints": model.num_keypoints, "visibility_head": False,
                        "overrides": {}}, "train": {"epochs": 3}}
    return {"config": config, "model": model.state_dict(), "ema": {"module": ema_model.state_dict(), "updates": 7,
                                                                    "decay": 0.999},
            "optimizer": {"state": {}, "param_groups": []}, "epoch": 3}


@pytest.mark.parametrize("layout", ["mmpose-1.x", "mmpose-0.x", "state_dict", "ddp state_dict"])
def test_each_layout_loads_strictly_and_gives_the_same_heatmaps(tmp_path, layout):
    source = _randomised()
    payload = {"mmpose-1.x": lambda: _mmpose_1x(source), "mmpose-0.x": lambda: _mmpose_0x(source),
               "state_dict": source.state_dict,
               "ddp state_dict": lambda: {"module." + k: v for k, v in source.state_dict().items()}}[layout]()
    path = tmp_path / "weights.pth"
    torch.save(payload, path)
    model, report = load_pretrained(path)
    assert report.format == layout.replace("ddp ", "") and report.preset == "litehrnet_18"
    assert report.reinitialised == []
    assert report.ignored == (["data_preprocessor.mean", "data_preprocessor.std"] if layout == "mmpose-1.x" else [])
    torch.testing.assert_close(_heatmaps(model), _heatmaps(source), rtol=0, atol=0)


def test_a_kpfast_checkpoint_gives_its_ema_weights_unless_asked_for_the_model(tmp_path):
    trained, ema = _randomised(seed=2), _randomised(seed=3)
    path = tmp_path / "best.pt"
    torch.save(_kpfast(trained, ema), path)
    model, report = load_pretrained(path)
    assert report.format == "kpfast" and report.preset == "litehrnet_18"
    torch.testing.assert_close(_heatmaps(model), _heatmaps(ema), rtol=0, atol=0)
    model, _ = load_pretrained(path, weights="model")
    torch.testing.assert_close(_heatmaps(model), _heatmaps(trained), rtol=0, atol=0)


def test_the_preset_is_inferred_from_the_shapes():
    assert infer_preset(build_model("litehrnet_30").state_dict()) == "litehrnet_30"
    assert infer_preset(build_model("naive_litehrnet_18", num_keypoints=5).state_dict()) == "naive_litehrnet_18"
    model, report = load_pretrained(_mmpose_1x(_randomised("litehrnet_30")))
    assert report.preset == "litehrnet_30" and sum(p.numel() for p in model.parameters()) == 1_763_717


def test_fine_tuning_on_another_keypoint_set_reinitialises_only_the_head():
    source = _randomised()
    model, report = load_pretrained(_mmpose_0x(source), num_keypoints=14)
    assert model.num_keypoints == 14
    assert report.reinitialised == ["head.final_layer.weight", "head.final_layer.bias"]
    assert report.ignored == ["head.final_layer.weight", "head.final_layer.bias"]
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    assert "re-initialised" in report.summary()


def test_a_mismatch_names_every_missing_unexpected_and_reshaped_key_in_one_message():
    state = dict(_randomised().state_dict())
    del state["backbone.stem.conv1.conv.weight"]
    state["backbone.extra.weight"] = torch.zeros(3)
    key = "backbone.stage0.0.layers.0.depthwise_convs.0.conv.weight"
    assert key in state
    state[key] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(PretrainedError) as error:
        load_pretrained(state, preset="litehrnet_18")
    message = str(error.value)
    assert "\n" not in message
    assert "1 missing: backbone.stem.conv1.conv.weight" in message
    assert "1 unexpected: backbone.extra.weight" in message
    assert f"1 differently shaped: {key} (file (1, 1, 3, 3)" in message


class NotWeights:
    """A pickled object torch.load(weights_only=True) must refuse."""


def test_files_load_only_as_weights(tmp_path):
    path = tmp_path / "pickle.pth"
    torch.save({"state_dict": {"backbone.x": torch.zeros(1)}, "meta": NotWeights()}, path)
    with pytest.raises(PretrainedError, match="weights_only=True"):
        load_pretrained(path)
    with pytest.raises(PretrainedError, match="no such file"):
        load_pretrained(tmp_path / "absent.pth")
    with pytest.raises(PretrainedError, match="not a state dict"):
        load_pretrained({"state_dict": {"backbone.x": "text"}})
    with pytest.raises(PretrainedError, match="no backbone"):
        load_pretrained({"head.final_layer.weight": torch.zeros(17, 40, 1, 1)})


# ----------------------------------------------------------------------------- by name or URL

def _published_file(tmp_path, model):
    """A generated MMPose 1.x checkpoint named as MMPose publishes them: NAME-<sha256[:8]>_DATE.pth."""
    raw = tmp_path / "raw.pth"
    torch.save(_mmpose_1x(model), raw)
    payload = raw.read_bytes()
    return payload, hashlib.sha256(payload).hexdigest()


def test_known_weights_download_once_with_resume_and_checksum(tmp_path, monkeypatch):
    from loopback import serve  # tests/loopback.py

    from kpfast.models import pretrained

    source = _randomised()
    payload, digest = _published_file(tmp_path, source)
    name = f"litehrnet18_coco_256x192-{digest[:8]}_20211230.pth"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with serve({name: payload, "wrong-" + name: payload[:-1] + bytes([payload[-1] ^ 0xFF])}) as site:
        known = pretrained.KnownWeights(site.url + name, digest[:8], "litehrnet_18", (256, 192), 0.642)
        monkeypatch.setitem(pretrained.KNOWN_WEIGHTS, "test_weights", known)
        site.state["cut_next"] = 1  # the first transfer breaks halfway: resumed with a Range request
        model, report = load_pretrained("test_weights")
        assert [r for _, r in site.state["requests"]] == [None, f"bytes={len(payload) // 2}-"]
        cached = pretrained.weights_cache() / name
        assert cached.read_bytes() == payload and report.preset == "litehrnet_18"
        torch.testing.assert_close(_heatmaps(model), _heatmaps(source), rtol=0, atol=0)
        load_pretrained("test_weights")  # cached: no second request
        assert len(site.state["requests"]) == 2
        # A URL carries its checksum in the published name: a file that does not match is refused, deleted.
        with pytest.raises(PretrainedError, match="SHA-256"):
            load_pretrained(site.url + "wrong-" + name)
        assert not (pretrained.weights_cache() / ("wrong-" + name)).exists()
        assert not (pretrained.weights_cache() / ("wrong-" + name + ".part")).exists()


def test_a_server_sending_more_than_a_checkpoint_can_be_is_stopped(tmp_path, monkeypatch):
    from loopback import serve

    from kpfast.models import pretrained

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(pretrained, "MAX_WEIGHTS_BYTES", 1000)
    with serve({"big.pth": b"x" * 5000}) as site:
        with pytest.raises(PretrainedError, match="more than the 1000"):
            load_pretrained(site.url + "big.pth")
    assert not any((pretrained.weights_cache()).glob("big.pth*"))


def test_the_published_table_names_each_preset_and_size_once():
    from kpfast.models.pretrained import KNOWN_WEIGHTS

    assert {(w.preset, w.input_size) for w in KNOWN_WEIGHTS.values()} == {
        (p, s) for p in ("litehrnet_18", "litehrnet_30") for s in ((256, 192), (384, 288))}
    for name, weights in KNOWN_WEIGHTS.items():
        assert f"-{weights.sha256_prefix}_" in weights.filename and weights.url.startswith("https://")
        assert name.startswith(weights.preset) and 0.6 < weights.published_ap < 0.75
