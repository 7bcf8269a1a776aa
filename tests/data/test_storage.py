import numpy as np
import pytest
import torch
from builders import tiny_dataset

from goalrank.data.storage import PreparedDataset
from goalrank.errors import ArtifactError, DataError


def test_round_trip_and_batches(tmp_path):
    dataset = PreparedDataset(tiny_dataset(tmp_path / "d"))
    assert (dataset.n_items, dataset.list_len, dataset.n_candidates, dataset.history_len) == (30, 3, 8, 5)
    train = dataset.split("train")
    assert len(train) == 64
    batches = list(train.batches(10))
    assert [len(b) for b in batches] == [10] * 6 + [4]
    first = batches[0]
    assert first.candidates.shape == (10, 8) and first.exposed.shape == (10, 3)
    assert first.labels.dtype == torch.float32
    np.testing.assert_array_equal(first.candidates.numpy(), train.arrays["candidates"][:10])


def test_shuffled_batches_cover_the_split_once_and_depend_only_on_seed(tmp_path):
    train = PreparedDataset(tiny_dataset(tmp_path / "d")).split("train")
    order_a = torch.cat([b.candidates[:, 0] for b in train.batches(7, shuffle=True, seed=3)])
    order_b = torch.cat([b.candidates[:, 0] for b in train.batches(7, shuffle=True, seed=3)])
    order_c = torch.cat([b.candidates[:, 0] for b in train.batches(7, shuffle=True, seed=4)])
    assert torch.equal(order_a, order_b) and not torch.equal(order_a, order_c)
    assert sorted(order_a.tolist()) == sorted(train.arrays["candidates"][:, 0].tolist())


def test_corrupted_or_missing_files_are_named(tmp_path):
    root = tiny_dataset(tmp_path / "d")
    path = root / "test" / "labels.npy"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ArtifactError, match="labels.npy: checksum mismatch"):
        PreparedDataset(root)
    path.unlink()
    with pytest.raises(ArtifactError, match="labels.npy: missing"):
        PreparedDataset(root)
    with pytest.raises(DataError, match="not found"):
        PreparedDataset(tmp_path / "nothing")
    with pytest.raises(DataError, match="split 'dev'"):
        PreparedDataset(tiny_dataset(tmp_path / "e")).split("dev")
