"""Raw ids to model indices: known users keep their index, unknown users get the cold-start index."""

from __future__ import annotations

from builders import tiny_dataset
from goalrank.data.storage import PreparedDataset
from goalrank.models.blocks import UNKNOWN_USER
from goalrank.serve.catalog import Catalog


def test_unknown_users_are_encoded_as_the_cold_start_index_known_ones_as_theirs(tmp_path) -> None:
    dataset = PreparedDataset(tiny_dataset(tmp_path / "data"))
    catalog = Catalog(dataset, list_len=3)
    candidates = [int(raw) for raw in dataset.item_raw_ids[1:9]]
    assert catalog.encode(10_000, None, candidates).users.tolist() == [UNKNOWN_USER]
    assert catalog.encode(None, None, candidates).users.tolist() == [UNKNOWN_USER]
    known = int(dataset.user_raw_ids[4])
    assert catalog.encode(known, None, candidates).users.tolist() == [4]
