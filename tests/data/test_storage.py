import numpy as np
import pytest
import torch

from builders import random_split, tiny_dataset
from goalrank.data.storage import MANIFEST, SPLITS, PreparedDataset, SplitSource, write_prepared
from goalrank.errors import ArtifactError, DataError
from goalrank.io import SUMS, read_json, sha256_file, write_json, write_recorded_json

SHAPE = {"n_users": 10, "n_items": 30, "list_len": 3, "n_candidates": 8, "history_len": 5}


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


def _write(root, splits, manifest=SHAPE):
    return write_prepared(root, splits, np.arange(10), np.arange(-1, 30), dict(manifest))


def _arrays(seed=0, size=20):
    return random_split(np.random.default_rng(seed), size, 30, 8, 3, 5)


def test_streamed_chunks_give_the_same_files_and_checksums_as_one_chunk(tmp_path):
    arrays = _arrays()
    whole = _write(tmp_path / "whole", {name: SplitSource(20, [arrays]) for name in SPLITS})
    parts = [{key: value[lo : lo + 7] for key, value in arrays.items()} for lo in range(0, 20, 7)]
    chunked = _write(tmp_path / "chunked", {name: SplitSource(20, iter(parts)) for name in SPLITS})
    files = sorted(p.relative_to(whole) for p in whole.rglob("*.npy"))
    assert len(files) == 2 + 7 * len(SPLITS)
    assert all(sha256_file(whole / f) == sha256_file(chunked / f) for f in files)
    manifest = read_json(chunked / MANIFEST)
    assert all(manifest["checksums"][str(f)] == sha256_file(chunked / f) for f in files)
    train = PreparedDataset(chunked).split("train")
    assert train.arrays["candidates"].dtype == np.int32 and train.batch(slice(0, 4)).candidates.dtype == torch.int64
    np.testing.assert_array_equal(train.arrays["exposed"], arrays["exposed"])


@pytest.mark.parametrize("declared", [19, 21])
def test_a_split_with_other_than_its_declared_rows_leaves_no_folder(tmp_path, declared):
    with pytest.raises(ValueError, match="declared|does not fit"):
        _write(tmp_path / "d", {name: SplitSource(declared, [_arrays()]) for name in SPLITS})
    assert not (tmp_path / "d").exists() and list(tmp_path.iterdir()) == []


def test_item_ids_beyond_the_stored_dtype_are_refused(tmp_path):
    arrays = _arrays()
    arrays["candidates"][0, 0] = 2**31
    with pytest.raises(DataError, match="candidates.npy: values outside the range of int32"):
        _write(tmp_path / "d", {name: SplitSource(20, [arrays]) for name in SPLITS})
    with pytest.raises(DataError, match="do not fit the int32"):
        _write(tmp_path / "e", {name: SplitSource(20, [arrays]) for name in SPLITS}, dict(SHAPE, n_items=2**31))


def test_an_edited_manifest_is_refused_and_one_without_a_record_is_read_as_before(tmp_path):
    root = tiny_dataset(tmp_path / "d")
    manifest = read_json(root / MANIFEST)
    write_json(root / MANIFEST, {**manifest, "n_items": manifest["n_items"] - 1})  # edited by hand
    with pytest.raises(ArtifactError, match="manifest.json: checksum mismatch"):
        PreparedDataset(root)
    assert PreparedDataset(root, verify=False).n_items == manifest["n_items"] - 1
    (root / SUMS).unlink()  # as a dataset written before manifests were recorded
    write_json(root / MANIFEST, manifest)
    assert PreparedDataset(root).n_items == manifest["n_items"]


def test_format_1_datasets_are_still_read_and_unknown_formats_refused(tmp_path):
    root = tiny_dataset(tmp_path / "d")
    manifest = read_json(root / MANIFEST)
    write_recorded_json(root / MANIFEST, {**manifest, "format_version": 1})
    assert len(PreparedDataset(root).split("test")) == 16
    write_recorded_json(root / MANIFEST, {**manifest, "format_version": 3})
    with pytest.raises(ArtifactError, match="format_version 3"):
        PreparedDataset(root)
