import numpy as np
import pytest
import torch

from kpfast.data.sampling import ResumableSampler, SeededDataset, sample_seed


def test_order_depends_only_on_seed_and_epoch():
    a = ResumableSampler(50, 4, seed=3)
    b = ResumableSampler(50, 4, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    assert sorted(a) == list(range(50))


def test_start_batch_skips_exactly_the_consumed_batches():
    full = ResumableSampler(30, 4, seed=0)
    full.set_epoch(1)
    order = list(full)
    resumed = ResumableSampler(30, 4, seed=0)
    resumed.set_epoch(1, start_batch=3)
    assert list(resumed) == order[12:]
    assert len(resumed) == len(order) - 12


def test_ranks_partition_the_epoch():
    ranks = [ResumableSampler(10, 2, seed=1, num_replicas=3, rank=r) for r in range(3)]
    for s in ranks:
        s.set_epoch(0)
    seen = [i for s in ranks for i in s]
    assert len(seen) == 12 and set(seen) == set(range(10))  # padded to a multiple of 3
    assert len({len(list(s)) for s in ranks}) == 1


def test_drop_last_batches():
    s = ResumableSampler(10, 4, drop_last=True)
    assert s.batches_per_epoch() == 2 and len(list(s)) == 8
    with pytest.raises(ValueError, match="rank"):
        ResumableSampler(10, 4, num_replicas=2, rank=2)


class _RandomDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return torch.rand(2), np.random.rand()


def test_seeded_dataset_is_a_function_of_epoch_and_index_and_keeps_global_rng():
    ds = SeededDataset(_RandomDataset(), seed=0)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = ds[3]
    assert torch.equal(torch.get_rng_state(), before)  # the training loop's RNG is untouched
    ds[1]
    b = ds[3]
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0], a[0])
    assert sample_seed(0, 0, 1) != sample_seed(0, 1, 0)
