"""The torch reference's DARK/UDP blur (also the fallback when the extension does not load) has
bounded memory: it blurs in chunks of maps (kpfast.reference.decode.BLUR_CHUNK_BYTES), each map
on its own, so chunking changes no value."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kpfast
import kpfast.reference.decode as reference
from kpfast.ops import decode_heatmaps

WORKTREE = Path(os.path.abspath(kpfast.__file__)).parents[1]


@pytest.mark.parametrize("method", ["dark", "udp"])
def test_chunked_blur_gives_the_same_values(method, monkeypatch):
    maps = torch.rand(37, 2, 17, 13, generator=torch.Generator().manual_seed(0))
    whole = decode_heatmaps(maps, method, 11, backend="torch")
    monkeypatch.setattr(reference, "BLUR_CHUNK_BYTES", 17 * 13 * 11 * 11 * 8 * 5)  # 5 maps per chunk
    assert reference.blur_chunk_size(17, 13, 11, 8) == 5
    chunked = decode_heatmaps(maps, method, 11, backend="torch")
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])


def test_many_large_maps_decode_within_bounded_memory():
    # The growth of the peak over the peak after a tiny decode: what importing torch maps in differs by
    # build (a CUDA build's libraries alone are about 1 GB of RSS), the blur's working set does not.
    code = ("import resource, torch; torch.set_num_threads(1); from kpfast.ops import decode_heatmaps; "
            "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024; "
            "decode_heatmaps(torch.rand(2, 1, 96, 72), 'dark', 31, backend='torch'); before = peak(); "
            "decode_heatmaps(torch.rand(60, 1, 96, 72), 'dark', 31, backend='torch'); "
            "print(before, peak())")
    env = dict(os.environ, PYTHONPATH=str(WORKTREE))
    done = subprocess.run([sys.executable, "-c", code], cwd=WORKTREE, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    before_mb, after_mb = map(int, done.stdout.split()[-2:])
    # Unchunked, the float64 im2col of the blur alone is 60 * 96 * 72 * 31**2 * 8 bytes = 3.2 GB; chunked,
    # it is at most BLUR_CHUNK_BYTES (256 MiB) plus the maps and their intermediates.
    assert after_mb - before_mb < 1000, f"peak RSS grew {after_mb - before_mb} MB (from {before_mb} MB)"
