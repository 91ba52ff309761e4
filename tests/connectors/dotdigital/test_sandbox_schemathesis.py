"""Calls generated from DotDigital's published documents (schemathesis) against the sandbox.

Every operation of the documents that the sandbox serves gets schemathesis's coverage cases
(each parameter at its bounds and just past them, every enum value, wrong types, missing
required parts, methods the path does not serve), a value outside the enum of each enum query
parameter, and, for a body, fuzzed schema-breaking bodies.
Each answer must be no 5xx, a status and content type the operation declares (the `SPEC_FAULTS`
patches apply), a body that matches its schema, and for a schema-breaking call a 4xx. What
generation leaves aside is named in `GENERATION_FAULTS`. Deterministic: coverage cases are
derived from the schema, the fuzzing is derandomized with no example database, and the counts
are fixed.
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
from schemathesis.core.parameters import ParameterLocation
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

# Positive body coverage cases kept per operation (evenly spread), and fuzzed bad bodies.
BODY_COVERAGE = 12
FUZZ_EXAMPLES = 5
PLACEHOLDERS = ("1", "00000000-0000-0000-0000-000000000001")
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


def served_operations() -> list[Any]:
    cases = []
    for name in contract.FILES:
        spec = contract.generation_spec(name, "http://sandbox.invalid")
        for path, method, _ in contract.operations(spec):
            if contract.spec_name(path) == name and serves(method.upper(), path):
                cases.append(
                    pytest.param(name, method.upper(), path, id=f"{method.upper()} {path}")
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


@pytest.fixture(scope="session")
def generated_specs(dotdigital_sandbox: Any) -> Callable[[str], dict[str, Any]]:
    loaded: dict[str, dict[str, Any]] = {}

    def spec(name: str) -> dict[str, Any]:
        if name not in loaded:
            loaded[name] = contract.generation_spec(name, dotdigital_sandbox.url)
        return loaded[name]

    return spec


def record_level(case: Any, path: str) -> bool:
    """A negative import call whose every mutation lies inside one record (GENERATION_FAULTS
    'import-records-checked-per-record')."""
    items = contract.IMPORT_ITEMS.get(path)
    meta = case.meta
    if items is None or meta is None:
        return False
    mutations = getattr(meta.phase.data, "mutations", ())
    return bool(mutations) and all(len(m.path) >= 2 and m.path[0] == items for m in mutations)


def checks_for(case: Any, path: str) -> list[Any]:
    mode = case.meta.generation.mode
    if mode is GenerationMode.NEGATIVE and not record_level(case, path):
        return [*CHECKS, negative_data_rejection]
    return CHECKS


def coverage_cases(schema: Any, operation: Any) -> list[Any]:
    """The coverage phase's cases, but bad bodies (fuzzed instead) and only `BODY_COVERAGE`
    good ones: a large body has hundreds of variants and each costs a call."""
    kept, bodies = [], []
    for case in schema.iter_coverage_cases(
        operation,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=schema.config.generation_for(operation=operation),
    ):
        if case.meta.phase.data.parameter_location is not ParameterLocation.BODY:
            kept.append(case)
        elif case.meta.generation.mode is GenerationMode.POSITIVE:
            bodies.append(case)
    step = max(1, -(-len(bodies) // BODY_COVERAGE))
    return kept + bodies[::step]


def enum_query_parameters(spec: dict[str, Any], path: str, method: str) -> list[str]:
    """Query parameters whose value (or each item) is one of an enum."""
    op = spec["paths"][path][method.lower()]
    names = []
    for ref in [*spec["paths"][path].get("parameters", []), *op.get("parameters", [])]:
        param = contract.resolve(spec, ref)
        schema = contract.resolve(spec, param.get("schema", {}))
        if schema.get("type") == "array":
            schema = contract.resolve(spec, schema.get("items", {}))
        if param["in"] == "query" and "enum" in schema:
            names.append(param["name"])
    return names


def enum_probes(
    spec: dict[str, Any], operation: Any, path: str, method: str, default: Any
) -> list[Any]:
    """A call per enum query parameter with a value outside its enum, the rest of the call the
    default valid one cut to its required parts. Schemathesis's coverage phase reads such a
    value as a possible type coercion and does not insist on its refusal; DotDigital refuses it."""
    op = spec["paths"][path][method.lower()]
    required = {
        contract.resolve(spec, ref)["name"]
        for ref in [*spec["paths"][path].get("parameters", []), *op.get("parameters", [])]
        if contract.resolve(spec, ref).get("required")
    }
    kept = {k: v for k, v in (default.query or {}).items() if k in required}
    return [
        operation.Case(
            path_parameters=default.path_parameters,
            query={**kept, name: "NotInTheEnum"},
            body=default.body,
            media_type=default.media_type,
        )
        for name in enum_query_parameters(spec, path, method)
    ]


def failure_text(case: Any, error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines()]
    interesting = [line for line in lines if line.startswith(("- ", "[", "`", "curl"))]
    return f"{case.meta.phase.data.description}\n  " + "\n  ".join(interesting[:6])


@pytest.mark.parametrize(("name", "method", "path"), SERVED)
def test_the_sandbox_answers_generated_calls_as_the_published_documents_say(
    sandbox, generated_schemas, generated_specs, name, method, path
):
    schema = generated_schemas(name)
    operation = schema[path][method]
    failures: list[str] = []

    def check(case: Any) -> None:
        response = case.call(base_url=sandbox.url, session=sandbox.api, timeout=30)
        try:
            case.validate_response(response, checks=checks_for(case, path))
        except AssertionError as error:
            failures.append(failure_text(case, error))

    cases = coverage_cases(schema, operation)
    assert cases
    for case in cases:
        check(case)
    for probe in enum_probes(generated_specs(name), operation, path, method, cases[0]):
        response = probe.call(base_url=sandbox.url, session=sandbox.api, timeout=30)
        if not 400 <= response.status_code < 500:
            failures.append(f"{probe.query}: answered {response.status_code}, not refused")
        try:
            probe.validate_response(response, checks=CHECKS)
        except AssertionError as error:
            failures.append(f"{probe.query}: {error}")

    if operation.body:

        @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        @settings(
            max_examples=FUZZ_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=(Phase.explicit, Phase.generate),
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            check(case)

        fuzz()

    assert not failures, f"{len(failures)} of the calls broke the documents:\n" + "\n".join(
        failures[:12]
    )


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
