"""Every registered model is covered: by its family's contract tests, or by a test module of its own.

The families come from the registry (``builders.GENERATOR_EVALUATOR``, ``builders.GENERATOR_ONLY``),
so a newly registered model gets its family's contract tests without any test edit; these tests fail
if a registered model drops out of every family or its family's tests stop being collected for it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict

import pytest

from builders import GENERATOR_EVALUATOR, GENERATOR_ONLY, OWN_TESTS
from goalrank.models.base import ListGenerator, PointwiseScorer, Ranker, SelfTrained
from goalrank.reward.model import RewardConfig, RewardModel
from goalrank.runs.load import build_model
from goalrank.runs.registry import MODELS

CONTRACT_MODULES = {
    "tests/models/test_baselines_ge.py": GENERATOR_EVALUATOR,
    "tests/models/test_baselines_gonly.py": GENERATOR_ONLY,
}


def test_every_registered_model_is_in_exactly_one_family():
    families = [*GENERATOR_EVALUATOR, *GENERATOR_ONLY, *OWN_TESTS]
    assert sorted(families) == sorted(MODELS)  # none missing, none twice, none unregistered
    assert all(MODELS[name].needs_evaluator for name in GENERATOR_EVALUATOR)
    assert not any(MODELS[name].needs_evaluator for name in GENERATOR_ONLY)


@pytest.fixture(scope="module")
def collected(pytestconfig: pytest.Config) -> list[tuple[str, str, str]]:
    """(module, test, parameter id) of every test pytest collects from the contract and own modules."""
    paths = [*CONTRACT_MODULES, *OWN_TESTS.values()]
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-p", "no:cacheprovider", *paths],
                          cwd=pytestconfig.rootpath, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return re.findall(r"^(\S+?\.py)::(\w+)(?:\[(.*)\])?$", done.stdout, re.MULTILINE)


@pytest.mark.parametrize("module", sorted(CONTRACT_MODULES))
def test_each_family_member_gets_every_contract_test_of_its_module(module, collected):
    family = set(CONTRACT_MODULES[module])
    models_by_test: dict[str, set[str]] = defaultdict(set)
    for path, test, parameter in collected:
        if path == module and parameter in MODELS:
            models_by_test[test].add(parameter)
    contract_tests = [test for test, models in models_by_test.items() if models == family]
    assert contract_tests, dict(models_by_test)  # some tests are parametrised over the whole family
    assert set().union(*models_by_test.values()) <= family  # no model of another family


@pytest.mark.parametrize("name", sorted(OWN_TESTS))
def test_models_outside_the_families_have_their_own_tests(name, collected):
    assert any(path == OWN_TESTS[name] for path, _, _ in collected)


OBJECTIVE_CONTRACTS = {"pointwise": PointwiseScorer, "self_trained": SelfTrained, "group_relative": ListGenerator}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_implements_the_protocol_its_objective_needs(name: str) -> None:
    """The registry pairs each model with an objective factory; the model must be what that objective
    trains (the factories cast, so this is where a wrong pairing is caught)."""
    spec = MODELS[name]
    config = spec.config_cls(n_items=12, n_users=10, list_len=3, d_model=8, n_heads=2)
    reward = RewardConfig(n_items=12, n_users=10, list_len=3, d_model=8, n_heads=2, position_weights="dcg")
    evaluator = RewardModel(reward) if spec.needs_evaluator else None
    model = build_model(name, config, evaluator)
    assert isinstance(model, OBJECTIVE_CONTRACTS[spec.objective.name]), (name, spec.objective.name)
    assert isinstance(model, Ranker) and model.list_len == 3
