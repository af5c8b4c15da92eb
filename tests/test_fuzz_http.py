"""Every HTTP entry point of the started service, fuzzed (a bounded, seeded few hundred inputs;
`benchmarks/fuzz_http.py` runs >= 10,000 per entry point): no answer >= 500, no dropped
connection, every reject a JSON `{error, reason}`, the service still ready afterwards, and the
fake patient the DICOM inputs carry named in no line of its log."""

from __future__ import annotations

import pytest

from http_fuzz import (TRIAGE_KINDS, fuzz_operation, fuzz_triage, is_ready,
                       known_path_values, leaked_identifiers, openapi_operations)

SEED = 20261201
TRIAGE_INPUTS = 80  # per kind of request
OPERATION_INPUTS = 20  # per OpenAPI operation
FUZZED_ROUTES = {"POST /v1/medication/risk", "POST /v1/medication/risk/fhir",
                 "GET /v1/cds-services", "POST /v1/cds-services/{service_id}",
                 "POST /v1/cds-services/{service_id}/feedback",
                 "GET /v1/imaging/results/{result_id}",
                 "GET /v1/imaging/results/{result_id}/{kind}", "GET /v1/worklist"}


def assert_still_ready_and_discreet(service) -> None:
    assert is_ready(service.url), (service.home / "service.log").read_text()[-3000:]
    assert leaked_identifiers((service.home / "service.log").read_text()) == []


@pytest.mark.parametrize("kind", TRIAGE_KINDS)
def test_triage_answers_every_damaged_instance_with_a_reason(service, kind):
    tally = fuzz_triage(service.url, service.headers("radiologist"), kind, TRIAGE_INPUTS,
                        seed_value=SEED)
    assert tally.sent == TRIAGE_INPUTS
    assert tally.failures == []
    rejected = sum(n for status, n in tally.statuses.items() if status.endswith(("400", "422")))
    # both outcomes reached: the 200s are radiographs of the fake patient, triaged
    assert tally.statuses["200"] > 0 and rejected > 0, tally.statuses
    assert_still_ready_and_discreet(service)


def test_json_fhir_cds_results_and_worklist_routes_answer_schemathesis_with_a_reason(service):
    operations = openapi_operations(service.url)
    assert FUZZED_ROUTES <= set(operations)
    known = known_path_values(service.url, service.headers("admin"))
    failures, answered = {}, {}
    for label, operation in operations.items():
        tally = fuzz_operation(service.url, service.headers("admin"), operation,
                               OPERATION_INPUTS, seed_value=SEED, known=known)
        answered[label] = tally.statuses
        if tally.failures:
            failures[label] = tally.failures[:3]
    assert failures == {}
    outcomes = [status for statuses in answered.values() for status in statuses]
    assert "200" in outcomes and "422" in outcomes, answered  # both accepted and refused
    assert_still_ready_and_discreet(service)
