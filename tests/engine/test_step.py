"""The training step: no host-device synchronisation, exact skipping of non-finite steps."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kpfast.data.normalize import normalize_images
from kpfast.engine.config import load_config
from kpfast.engine.loop import train_one_epoch
from kpfast.engine.checkpointer import TrainState
from kpfast.engine.trainer import Trainer

aten = torch.ops.aten
# Ops whose result the host must wait for: a value read (item/bool/float/int all end in
# _local_scalar_dense), or an output size that depends on tensor values.
_SYNCING = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten._unique2, aten.unique_dim,
            aten.unique_consecutive, aten.equal, aten.is_nonzero, aten.item, aten.repeat_interleave}
_INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


class SyncRecorder(TorchDispatchMode):
    """Records every op that would make the host wait for the device (and host copies of values)."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []
        self.paused = False
        self.active = False

    def __enter__(self):
        self.active = True
        return super().__enter__()

    def __exit__(self, *exc):
        self.active = False
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        bool_index = packet in _INDEXING and any(
            torch.is_tensor(i) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else []) or [])
        if not self.paused and (packet in _SYNCING or bool_index):
            self.calls.append(str(func))
        return func(*args, **kwargs)


@pytest.fixture
def sync_recorder(monkeypatch):
    recorder = SyncRecorder()
    # Host copies that bypass the dispatcher.
    for name in ("tolist", "numpy", "__array__"):
        original = getattr(torch.Tensor, name)

        def wrapped(self, *args, _original=original, _name=name, **kwargs):
            if recorder.active and not recorder.paused:
                recorder.calls.append(f"Tensor.{_name}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    return recorder


def _trainer(overrides, *extra):
    return Trainer(load_config(None, list(overrides) + list(extra)), log=lambda s: None)


def _first_batch(trainer):
    return next(iter(trainer._train_loader()))


def test_the_recorder_sees_syncs(sync_recorder):
    x = torch.randn(5)
    with sync_recorder:
        x.sum().item()
        bool(x.sum() > 0)
        _ = x[x > 0]
        x.tolist()
    assert len(sync_recorder.calls) >= 4, sync_recorder.calls


@pytest.mark.parametrize("extra", [[], ["optim.grad_clip=1.0", "train.ema=true", "loss.coordinate_weight=0.5",
                                        "loss.ohkm_topk=8", "optim.name=sgd"]], ids=["default", "options"])
def test_training_step_makes_no_host_device_sync(tiny_overrides, sync_recorder, extra):
    trainer = _trainer(tiny_overrides, "train.run_name=nosync", *extra)
    batch = _first_batch(trainer)
    trainer.step(batch)  # first step: lazy allocations
    with sync_recorder:
        trainer.step(batch)
        nan_batch = dict(batch, image=normalize_images(batch["image"]))  # floats: taken as normalised
        nan_batch["image"][0] = float("nan")
        trainer.step(nan_batch)  # a skipped step takes the same path
    assert sync_recorder.calls == []
    with sync_recorder:
        reading = trainer.step.read()  # the reading at log points is where the host waits
    assert sync_recorder.calls and reading.count == 2 and reading.skipped_total == 1


def test_an_epoch_syncs_only_at_log_interval_readings(tiny_overrides, sync_recorder):
    trainer = _trainer(tiny_overrides, "train.run_name=epochsync")
    batch = _first_batch(trainer)
    step = trainer.step
    reads = []
    original_read = step.read

    def read():
        reads.append(state.batch_in_epoch)
        sync_recorder.paused = True
        try:
            return original_read()
        finally:
            sync_recorder.paused = False

    state = TrainState()
    step.read = read
    with sync_recorder:
        interrupted = train_one_epoch(step, [batch] * 7, state, trainer.scheduler, steps_per_epoch=7, log_interval=3,
                                      max_consecutive_nonfinite=5, stop_requested=lambda: False)
    assert not interrupted and state.global_step == 7
    assert reads == [3, 6, 7]
    assert sync_recorder.calls == []
    assert state.epoch_loss_count == 7 and state.epoch_loss_sums["loss"] > 0


@pytest.mark.parametrize("optim", ["adamw", "sgd"])
def test_a_nonfinite_step_leaves_weights_buffers_optimizer_and_ema_unchanged(tiny_overrides, optim):
    trainer = _trainer(tiny_overrides, "train.run_name=skip", f"optim.name={optim}", "train.ema=true",
                       "optim.grad_clip=1.0")
    batch = _first_batch(trainer)
    trainer.step(batch)
    model_before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    optim_before = {id(p): {k: v.clone() for k, v in s.items()} for p, s in trainer.optimizer.state.items()}
    ema_before = {k: v.clone() for k, v in trainer.ema.module.state_dict().items()}
    # NaN activations: the forward writes NaN into BN statistics (float crops: taken as normalised).
    nan_batch = dict(batch, image=torch.full(batch["image"].shape, float("nan")))
    trainer.step(nan_batch)
    after = trainer.model.state_dict()
    assert any(k.endswith("running_mean") for k in after)
    for key, value in model_before.items():
        assert torch.equal(value, after[key]), key
    for param, state in trainer.optimizer.state.items():
        for name, value in state.items():
            assert torch.equal(optim_before[id(param)][name], value), name
    for key, value in trainer.ema.module.state_dict().items():
        assert torch.equal(ema_before[key], value), key
    reading = trainer.step.read()
    assert (reading.count, reading.skipped_total, reading.consecutive) == (1, 1, 1)
    # And a good step afterwards trains again.
    trainer.step(batch)
    after = trainer.model.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in model_before.items() if v.dtype.is_floating_point)
    assert trainer.step.read().consecutive == 0
