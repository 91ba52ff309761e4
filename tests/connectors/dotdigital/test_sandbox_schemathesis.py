"""Calls generated from DotDigital's published documents (schemathesis) against the sandbox.

Every operation of the documents that the sandbox serves gets schema-valid calls (positive) and,
where the document constrains anything, schema-breaking ones (negative). Each answer must be no
5xx, a status and content type the operation declares (the `SPEC_FAULTS` patches apply), a body
that matches its schema, and for a negative call a 4xx. What generation leaves aside is named in
`GENERATION_FAULTS`. Deterministic: derandomized, no example database, a fixed number of
examples per operation and mode.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from connectors.dotdigital.sandbox import server

# Imported by name, as conftest.py does: this folder is on sys.path, it is not a package.
contract: Any = importlib.import_module("openapi_contract")

EXAMPLES = 6
PLACEHOLDERS = ("1", "00000000-0000-0000-0000-000000000001")
METHODS = ("get", "put", "post", "patch", "delete")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def serves(method: str, template: str) -> bool:
    """The sandbox routes the template to a handler with every path parameter as a parameter
    (not, say, `/contacts/v3/delete/{id}` taken as a contact whose identifier is `delete`)."""
    for placeholder in PLACEHOLDERS:
        handler, params, _, _ = server.route(method, re.sub(r"\{[^}]+\}", placeholder, template))
        if handler is not None and all(value == placeholder for value in params.values()):
            return True
    return False


def constrains_anything(spec: dict[str, Any], path: str, op: dict[str, Any]) -> bool:
    """Whether a schema-breaking call exists: a body, a query or header parameter, or a path
    parameter that is more than any string."""
    if "requestBody" in op:
        return True
    params = [
        contract.resolve(spec, p)
        for p in [*spec["paths"][path].get("parameters", []), *op.get("parameters", [])]
    ]
    for param in params:
        if param["in"] != "path":
            return True
        schema = param.get("schema", {})
        if schema.get("type") != "string" or set(schema) - {"type", "example", "description"}:
            return True
    return False


def served_operations() -> list[Any]:
    cases = []
    for name in contract.FILES:
        spec = contract.generation_spec(name, "http://sandbox.invalid")
        for path, method, op in contract.operations(spec):
            if contract.spec_name(path) != name or not serves(method.upper(), path):
                continue
            cases.append(
                pytest.param(
                    name, method.upper(), path, "positive", id=f"{method.upper()} {path} positive"
                )
            )
            if constrains_anything(spec, path, op):
                cases.append(
                    pytest.param(
                        name,
                        method.upper(),
                        path,
                        "negative",
                        id=f"{method.upper()} {path} negative",
                    )
                )
    return cases


SERVED = served_operations()


@pytest.fixture(scope="session")
def generated_schemas(dotdigital_sandbox: Any) -> Callable[[str], Any]:
    loaded: dict[str, Any] = {}

    def schema(name: str) -> Any:
        if name not in loaded:
            loaded[name] = schemathesis.openapi.from_dict(
                contract.generation_spec(name, dotdigital_sandbox.url)
            )
        return loaded[name]

    return schema


def record_level(case: Any, path: str) -> bool:
    """A negative import call whose every mutation lies inside one record (GENERATION_FAULTS
    'import-records-checked-per-record')."""
    items = contract.IMPORT_ITEMS.get(path)
    meta = case.meta
    if items is None or meta is None:
        return False
    mutations = getattr(meta.phase.data, "mutations", ())
    return bool(mutations) and all(len(m.path) >= 2 and m.path[0] == items for m in mutations)


def checks_for(case: Any, path: str, mode: str) -> list[Any]:
    if mode == "negative" and not record_level(case, path):
        return [*CHECKS, negative_data_rejection]
    return CHECKS


@pytest.mark.parametrize(("name", "method", "path", "mode"), SERVED)
def test_the_sandbox_answers_generated_calls_as_the_published_documents_say(
    sandbox, generated_schemas, name, method, path, mode
):
    operation = generated_schemas(name)[path][method]

    @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Any) -> None:
        response = case.call(base_url=sandbox.url, session=sandbox.api, timeout=30)
        case.validate_response(response, checks=checks_for(case, path, mode))

    call()


def test_the_run_covers_every_operation_the_client_and_issue_name():
    labels = {(values[1], values[2]) for values in (p.values for p in SERVED)}
    for expected in [
        ("POST", "/contacts/v3"),
        ("PUT", "/contacts/v3/{identifier}/{value}"),
        ("PATCH", "/contacts/v3/{identifier}/{value}"),
        ("PUT", "/contacts/v3/import"),
        ("GET", "/contacts/v3"),
        ("DELETE", "/insightData/v3/collections/{collectionName}"),
        ("GET", "/insightData/v3/account"),
        ("PUT", "/insightData/v3/import"),
        ("DELETE", "/v2/address-books/{id}"),
        ("POST", "/v2/programs/enrolments"),
    ]:
        assert expected in labels
    assert ("GET", "/contacts/v3/delete/{deleteId}") not in labels
    assert len(contract.GENERATION_FAULTS) == 3
