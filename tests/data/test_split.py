import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goalrank.data.split import temporal_split
from goalrank.errors import DataError


def test_hand_example_cuts_and_straddling():
    starts = np.array([0, 10, 20, 30, 40, 50, 60, 70, 80, 90])
    ends = starts + np.array([5, 5, 5, 5, 5, 5, 5, 15, 5, 5])  # list 7 runs from 70 to 85
    split = temporal_split(starts, ends, test_fraction=0.2, valid_fraction=0.25)
    # test: the latest 2 of 10 starts -> t_test = 80; lists ending before 80: 0..6 (7 lists)
    # valid: the latest ceil(0.25 * 7) = 2 of those -> t_valid = 50
    assert (split.t_test, split.t_valid) == (80, 50)
    assert split.index["test"].tolist() == [8, 9]
    assert split.index["valid"].tolist() == [5, 6]
    assert split.index["train"].tolist() == [0, 1, 2, 3, 4]
    assert split.straddling == 1  # list 7 crosses t_test


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 30)), min_size=20, max_size=200))
def test_every_list_lies_inside_its_window(spans):
    starts = np.array([s for s, _ in spans])
    ends = starts + np.array([d for _, d in spans])
    try:
        split = temporal_split(starts, ends, 0.2, 0.1)
    except DataError:
        return
    assert split.t_valid < split.t_test
    assert (ends[split.index["train"]] < split.t_valid).all()
    assert (starts[split.index["valid"]] >= split.t_valid).all()
    assert (ends[split.index["valid"]] < split.t_test).all()
    assert (starts[split.index["test"]] >= split.t_test).all()
    assigned = np.concatenate(list(split.index.values()))
    assert len(set(assigned.tolist())) == assigned.size == len(spans) - split.straddling
    assert split.index["test"].size >= 0.2 * len(spans)


def test_empty_split_is_a_data_error():
    starts = np.zeros(10, dtype=np.int64)  # every list starts at once: nothing before the test cut
    with pytest.raises(DataError, match="no lists end before the test cut"):
        temporal_split(starts, starts + 1, 0.2, 0.1)
