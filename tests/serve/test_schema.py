"""The published OpenAPI schema is the contract of the service: schemathesis holds it to it.

Requests generated from /openapi.json, valid and invalid, go to the service as ``goalrank serve``
runs it; every answer must be below 500 and conform to the schema (status code documented, body
and headers of the documented shape). Schema-valid requests may still be refused with the
documented 422, because which item ids the run knows is not in the schema, so schemathesis's
"valid data is accepted" check does not apply.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from goalrank.serve.app import RankingService, ServeConfig
from serving import running

EXAMPLES = 60  # per operation and generation mode: enough to reach every error path, well under a minute


@pytest.fixture(scope="module")
def api_schema(goalrank_run: Path) -> Iterator[schemathesis.BaseSchema]:
    service = RankingService(ServeConfig(run=str(goalrank_run)))
    with running(service) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_service_conforms_to_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
