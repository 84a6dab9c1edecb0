"""Every hostile request that once answered 500 gets the 4xx JSON error naming the problem,
and leaves no row behind."""

import json

import pytest

from tests.hostile.cases import CASES, Case
from tests.hostile.probe import send

pytestmark = pytest.mark.django_db


def check(case: Case) -> None:
    response = send(case.request)  # also: < 500, JSON error contract, no partial rows
    answer = json.loads(response.content)
    assert response.status_code == case.status, answer
    if case.error:
        assert answer["error"] == case.error, answer
    if case.field:
        assert answer.get("field") == case.field, answer


@pytest.mark.parametrize("name", CASES)
def test_hostile_request_gets_a_json_error_naming_the_problem(name: str) -> None:
    check(CASES[name])
