import math

import pytest
import torch

from kpfast.engine.config import OptimConfig, ScheduleConfig
from kpfast.engine.optim import build_optimizer, build_scheduler, lr_factor, parameter_groups


def test_cosine_restarts_cycles_double_after_warmup():
    cfg = ScheduleConfig(name="cosine_restarts", warmup_epochs=1, warmup_start_factor=0.0, cycle_epochs=2, cycle_mult=2)
    spe = 10
    assert lr_factor(0, spe, 20, cfg) == pytest.approx(0.0)
    assert lr_factor(5, spe, 20, cfg) == pytest.approx(0.5)  # half-way through linear warm-up
    assert lr_factor(10, spe, 20, cfg) == pytest.approx(1.0)  # first cycle starts at the peak
    assert lr_factor(20, spe, 20, cfg) == pytest.approx(0.5)  # half of a 2-epoch cycle
    assert lr_factor(30, spe, 20, cfg) == pytest.approx(1.0)  # restart after 2 epochs
    assert lr_factor(50, spe, 20, cfg) == pytest.approx(0.5)  # half of the 4-epoch second cycle
    assert lr_factor(70, spe, 20, cfg) == pytest.approx(1.0)  # second restart


def test_multistep_and_step():
    ms = ScheduleConfig(name="multistep", milestones=[2, 4], gamma=0.1)
    assert [lr_factor(e * 5, 5, 6, ms) for e in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    st = ScheduleConfig(name="step", step_epochs=3, gamma=0.5)
    assert lr_factor(3 * 7, 7, 10, st) == pytest.approx(0.5)
    assert lr_factor(3 * 7 - 1, 7, 10, st) == pytest.approx(1.0)


def test_cosine_reaches_min_factor_at_end():
    cfg = ScheduleConfig(name="cosine", min_lr_factor=0.01)
    assert lr_factor(100, 10, 10, cfg) == pytest.approx(0.01)
    assert lr_factor(50, 10, 10, cfg) == pytest.approx(0.01 + 0.99 * 0.5)


def test_scheduler_applies_factor_per_step_and_state_resumes():
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, OptimConfig(name="adamw", lr=0.1, weight_decay=0.01))
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4, total_epochs=3)
    lrs = []
    for _ in range(7):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[-1] == pytest.approx(0.1 * lr_factor(7, 4, 3, cfg))
    state = sched.state_dict()
    opt2 = build_optimizer(model, OptimConfig(name="adamw", lr=0.1, weight_decay=0.01))
    sched2 = build_scheduler(opt2, cfg, steps_per_epoch=4, total_epochs=3)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_no_weight_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    groups = parameter_groups(model, 0.05)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}


def test_bad_steps_per_epoch():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        lr_factor(0, 0, 1, ScheduleConfig())


def test_a_registered_schedule_is_usable_by_name_and_warmup_applies_on_top():
    from kpfast.engine.config import config_from_dict
    from kpfast.engine.optim import SCHEDULES, lr_factor, register_schedule

    @register_schedule("test_halving")
    def halving(epoch, total_epochs, cfg):
        return 0.5 ** int(epoch)

    try:
        cfg = config_from_dict({"schedule": {"name": "test_halving", "warmup_epochs": 1.0,
                                             "warmup_start_factor": 0.5}}).schedule
        assert lr_factor(0, 10, 5, cfg) == 0.5  # warm-up start (0.5) x halving(0) = 1
        assert lr_factor(20, 10, 5, cfg) == 0.25  # epoch 2, warm-up over
        with pytest.raises(ValueError, match="already registered"):
            register_schedule("test_halving")(halving)
    finally:
        SCHEDULES.pop("test_halving")
