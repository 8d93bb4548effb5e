"""Training throughput of the Lite-HRNet presets (forward + backward), images/s.

    python -m pytest benchmarks/test_bench_models.py --benchmark-only

CUDA cases: litehrnet_18 / litehrnet_30, B=64, 256x192, float32 or bf16 autocast, channels_last
on/off (skipped without CUDA). CPU case: litehrnet_18, B=4 at 128x96 (kept cheap: depthwise
convolution backward is slow on CPU; it runs anywhere, e.g. in CI).
``benchmark.extra_info`` records the device, the setting and ``images_per_s`` (batch / median).
"""

from __future__ import annotations

import platform

import pytest
import torch

from kpfast.models import build_model


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:  # platform.processor() is empty on most Linux systems
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _training_step(model, images, amp_dtype, device):
    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            heatmaps = model(images)["heatmaps"]
        heatmaps.float().square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def _run(benchmark, name, batch, size, device, amp_dtype, channels_last, rounds, warmup_rounds):
    torch.manual_seed(0)
    model = build_model(name).to(device).train()
    images = torch.randn(batch, 3, *size, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    step = _training_step(model, images, amp_dtype, device)
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        device=_device_name(device),
        model=name,
        batch=batch,
        input=f"{size[0]}x{size[1]}",
        dtype="bf16-autocast" if amp_dtype is torch.bfloat16 else "float32",
        channels_last=channels_last,
        torch=torch.__version__,
        images_per_s=batch / median,
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", ["litehrnet_18", "litehrnet_30"])
def test_train_step_cuda(benchmark, name, amp_dtype, channels_last):
    torch.backends.cudnn.benchmark = True
    benchmark.group = f"models-cuda-{name}"
    _run(benchmark, name, 64, (256, 192), torch.device("cuda"), amp_dtype, channels_last, rounds=20, warmup_rounds=5)


def test_train_step_cpu(benchmark):
    benchmark.group = "models-cpu"
    _run(benchmark, "litehrnet_18", 4, (128, 96), torch.device("cpu"), None, False, rounds=3, warmup_rounds=1)
