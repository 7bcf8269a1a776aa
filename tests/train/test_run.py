"""The run config a ranker trains with: the dataset's kind of log decides some defaults."""

import pytest

from builders import tiny_dataset
from goalrank.config import to_dict
from goalrank.data.storage import PreparedDataset
from goalrank.models.egrerank import EGRerankConfig
from goalrank.objectives.reference import ReferenceConfig
from goalrank.train.run import REAL_LOG_DEFAULTS, build_ranker_config


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    real = PreparedDataset(tiny_dataset(root / "real"))
    simulated = PreparedDataset(tiny_dataset(root / "sim", simulator=str(root / "world")))
    return real, simulated


def test_a_real_log_takes_the_tuning_studys_real_log_defaults(datasets):
    real, _ = datasets
    goalrank, _ = build_ranker_config("goalrank", real, {})
    assert (goalrank.reference.supervised_target, goalrank.reference.supervised_weight) == ("positives", 10.0)
    egrerank, model = build_ranker_config("egrerank", real, {})
    assert egrerank.model["supervised_weight"] == model.supervised_weight == 3.0
    dnn, _ = build_ranker_config("dnn", real, {})  # a model without such defaults keeps the dataclasses'
    assert dnn.reference == ReferenceConfig()
    assert set(REAL_LOG_DEFAULTS) == {"goalrank", "egrerank"}


def test_simulator_data_keeps_the_dataclass_defaults(datasets):
    _, simulated = datasets
    goalrank, _ = build_ranker_config("goalrank", simulated, {})
    assert goalrank.reference == ReferenceConfig()
    egrerank, _ = build_ranker_config("egrerank", simulated, {})
    assert egrerank.model["supervised_weight"] == EGRerankConfig(n_items=1, list_len=1).supervised_weight == 1.0


def test_values_set_by_hand_win_key_by_key(datasets):
    real, simulated = datasets
    config, _ = build_ranker_config("goalrank", real, {"reference": {"supervised_weight": 0.0, "temperature": 0.5}})
    assert (config.reference.supervised_target, config.reference.supervised_weight) == ("positives", 0.0)
    assert config.reference.temperature == 0.5
    logged = {"reference": {"supervised_target": "logged", "supervised_weight": 1.0}}
    on_real, _ = build_ranker_config("goalrank", real, logged)
    on_simulated, _ = build_ranker_config("goalrank", simulated, logged)
    assert to_dict(on_real) == to_dict(on_simulated)  # the shared defaults, asked for, are what a real log gets
