"""Validate real calls against DotDigital's published OpenAPI documents (openapi-core 0.23.1).

The specs in `specs/` are loaded as dicts, given the loader fixes that VALIDATING.md found
necessary for any instance to pass (a server entry for the sandbox's URL, JavaScript-style regex
literals stripped, closed `allOf` branches opened to their siblings' properties), then patched for
the specs' own faults, each named in `SPEC_FAULTS` with the reason. Nothing else is relaxed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

SPEC_DIR = Path(__file__).resolve().parent / "specs"
FILES = {
    "contacts": "dotdigital-contacts-service.json",
    "insight": "dotdigital-insight-data-service.json",
    "accounts": "accounts-and-utilities.yaml",
    "data-fields": "Dotdigital-dotdigital-contact-data-fields-2.0.0-resolved-1.yaml",
    "preferences": "Dotdigital-dotdigital-preferences-and-subscriptions-2.0.0-resolved.yaml",
    "programs": "programs.yaml",
    "v2": "dotdigital-v2-api-swagger.json",
}
# Which document describes a path; the per-area 3.1 documents avoid the v2 swagger's route
# ambiguity (VALIDATING.md 5.7). First match wins.
ROUTING = (
    ("/contacts/v3", "contacts"),
    ("/insightData/v3", "insight"),
    ("/v2/account-info", "accounts"),
    ("/v2/data-fields", "data-fields"),
    ("/v2/contacts/suppressed-since", "preferences"),
    ("/v2/contacts/unsubscribe", "preferences"),
    ("/v2/programs", "programs"),
    ("/v2/", "v2"),
)

# The specs' own faults, patched by name. Keep this list short: each entry is a place where the
# published document contradicts itself or DotDigital's documented behaviour.
SPEC_FAULTS = {
    "undeclared-error-statuses": (
        "Most operations declare no 401/403/413/429/5xx (the v2 3.1 documents no 4xx at all), "
        "and 401 is declared without a body; any status an operation does not declare is "
        "checked against DotDigital's documented error envelope for its API family instead."
    ),
    "insight-import-status-finished": (
        "The v3 insight import status enum lacks 'Finished', which the spec's own 'Import "
        "complete' example and DotDigital's Magento connector use."
    ),
    "insight-record-body-declared-string": (
        "Single insight record PUTs declare the body as a JSON *string*; the wire body is the "
        "JSON document itself (the example is that document)."
    ),
    "insight-schema-example-is-array": (
        "GET collections/{name}/schema declares `schema` as an object; its example (the "
        "field listing) is an array."
    ),
    "contact-id-identifier-type-conflict": (
        "Import identifiers require contactId to be both an integer (contactIdObject) and a "
        "string (identifiers.additionalProperties); the integer is what the spec documents."
    ),
    "email-channel-closed-to-resubscribe-options": (
        "The request's channelProperties.email forbids extra keys in one allOf branch while the "
        "sibling branch adds resubscribeOptions, so no documented PATCH with resubscribeOptions "
        "can pass."
    ),
    "address-book-delete-declared-binary": (
        "The v2 document declares DELETE /v2/address-books/{id} as 200 with a binary body "
        "(its generator's reading of an action without a result); DotDigital's Lists document "
        "declares the 204 it answers."
    ),
    "data-field-nulls": (
        "The 3.1 data-fields document types defaultValue (request) and dependencies (delete "
        "response) without null, yet its own examples send and return null for them."
    ),
}

# What generating calls from the documents (schemathesis) must leave aside, by name. Keep it short:
# each entry is a place where a schema-derived expectation is not what DotDigital documents.
GENERATION_FAULTS = {
    "integration-token-header": (
        "x-ddg-integration-token is an optional partner tracking header the client never "
        "sends; how DotDigital answers a malformed one is not documented, so it is not generated."
    ),
    "prose-only-constraints": (
        "The documents leave constraints in prose (~created and ~modified exclusive, select "
        "1-1000, dates that exist, identifiers and lists that exist, unique names), so a "
        "schema-valid call may rightly be refused: refusals are checked for their envelope, "
        "not counted as rejected valid data."
    ),
    "import-records-checked-per-record": (
        "An import whose envelope is valid is accepted (202) and each record is checked on "
        "its own, its faults in the import report (dotdigital-api.md, contact and insight "
        "imports); a record that breaks the schema need not refuse the call."
    ),
}
IMPORT_ITEMS = {"/contacts/v3/import": "contacts", "/insightData/v3/import": "records"}


V3_ERROR = {
    "type": "object",
    "required": ["errorCode", "description"],
    "properties": {
        "errorCode": {"type": "string"},
        "description": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["item", "description"],
                "properties": {"item": {"type": "string"}, "description": {"type": "string"}},
            },
        },
    },
}
V2_ERROR = {
    "type": "object",
    "required": ["message"],
    "properties": {"message": {"type": "string", "minLength": 1}},
}


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def property_names(spec: dict[str, Any], node: dict[str, Any], depth: int = 0) -> set[str]:
    node = resolve(spec, node)
    names = set(node.get("properties", {}))
    if depth < 8:
        for branch in node.get("allOf", []):
            names |= property_names(spec, branch, depth + 1)
    return names


# -- loader fixes (VALIDATING.md 6) -------------------------------------------------------------


def strip_js_regex(spec: dict[str, Any]) -> None:
    for node in walk(spec):
        pattern = node.get("pattern")
        if isinstance(pattern, str) and len(pattern) > 2 and pattern[0] == pattern[-1] == "/":
            node["pattern"] = pattern[1:-1]


def open_closed_allof_branches(spec: dict[str, Any]) -> None:
    """A closed branch gets its siblings' property names, so it still rejects unknown keys."""
    for node in list(walk(spec)):
        branches = node.get("allOf")
        if not isinstance(branches, list):
            continue
        names: set[str] = set()
        for branch in branches:
            names |= property_names(spec, branch)
        for index, branch in enumerate(branches):
            target = resolve(spec, branch)
            if target.get("additionalProperties") is not False:
                continue
            if "$ref" in branch:
                target = copy.deepcopy(target)
                branches[index] = target
            props = target.setdefault("properties", {})
            for name in names - set(props):
                props[name] = {}


# -- the specs' faults -----------------------------------------------------------------------


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "put", "post", "patch", "delete"):
                yield path, method, op


def fault_undeclared_error_statuses(name: str, spec: dict[str, Any]) -> None:
    envelope = V3_ERROR if name in ("contacts", "insight") else V2_ERROR
    for _, _, op in operations(spec):
        responses = op.setdefault("responses", {})
        for code, response in list(responses.items()):
            if code.startswith(("4", "5")) and "content" not in resolve(spec, response):
                del responses[code]
        responses.setdefault(
            "default",
            {
                "description": "DotDigital error envelope",
                "content": {"application/json": {"schema": envelope}},
            },
        )


def fault_insight(name: str, spec: dict[str, Any]) -> None:
    if name != "insight":
        return
    schemas = spec["components"]["schemas"]
    schemas["inline_response_200"]["properties"]["status"]["enum"].append("Finished")
    schemas["inline_response_200_3"]["properties"]["schema"] = {}
    for path, method, op in operations(spec):
        if method == "put" and path.endswith("/{recordId}"):
            op["requestBody"]["content"]["application/json"]["schema"] = {"type": "object"}


def fault_contacts(name: str, spec: dict[str, Any]) -> None:
    if name != "contacts":
        return
    schemas = spec["components"]["schemas"]
    schemas["identifiers"]["properties"]["contactId"] = {"type": "integer", "minimum": 0}
    email = schemas["channelProperties_channelProperties_email"]
    email["properties"]["resubscribeOptions"] = {
        "$ref": "#/components/schemas/"
        "channelPropertiesWithResubscribe_channelProperties_email_resubscribeOptions"
    }


def fault_data_fields(name: str, spec: dict[str, Any]) -> None:
    if name != "data-fields":
        return
    for path, method, op in operations(spec):
        if path == "/v2/data-fields" and method == "post":
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            schema["properties"]["defaultValue"]["type"] = ["string", "null"]
        if path == "/v2/data-fields/{name}" and method == "delete":
            schema = op["responses"]["200"]["content"]["application/json"]["schema"]
            schema["properties"]["dependencies"]["type"] = ["array", "null"]


def fault_v2_address_book_delete(name: str, spec: dict[str, Any]) -> None:
    if name != "v2":
        return
    spec["paths"]["/v2/address-books/{id}"]["delete"]["responses"] = {
        "204": {"description": "No Content"}
    }


PATCHES: list[Callable[[str, dict[str, Any]], None]] = [
    fault_v2_address_book_delete,
    fault_undeclared_error_statuses,
    fault_insight,
    fault_contacts,
    fault_data_fields,
]


def patched_spec(name: str, base_url: str) -> dict[str, Any]:
    """The published document as a dict, with the loader fixes and the `SPEC_FAULTS` patches."""
    spec: dict[str, Any] = json.loads((SPEC_DIR / FILES[name]).read_text())
    spec["servers"] = [*spec.get("servers", []), {"url": base_url}]
    strip_js_regex(spec)
    for patch in PATCHES:
        patch(name, spec)
    open_closed_allof_branches(spec)
    return spec


def spec_name(path: str) -> str:
    """Which document describes `path` (a concrete path or a template)."""
    for prefix, name in ROUTING:
        if path.startswith(prefix):
            return name
    raise ContractError(f"no published spec describes {path}")


def load_spec(name: str, base_url: str) -> OpenAPI:
    return OpenAPI.from_dict(patched_spec(name, base_url))


def generation_spec(name: str, base_url: str) -> dict[str, Any]:
    """`patched_spec` for generating calls: the sandbox as the only server, auth sent by the
    caller (its failures are tested on their own), the integration token left out."""
    spec = patched_spec(name, base_url)
    spec["servers"] = [{"url": base_url}]
    spec["security"] = []
    for _, _, op in operations(spec):
        op.pop("security", None)
    for holder in [*spec["paths"].values(), *(op for _, _, op in operations(spec))]:
        if "parameters" in holder:
            holder["parameters"] = [
                p
                for p in holder["parameters"]
                if resolve(spec, p).get("name") != "x-ddg-integration-token"
            ]
    return spec


class ContractError(AssertionError):
    pass


class Contract:
    spec_dir = SPEC_DIR
    faults = SPEC_FAULTS
    Error = ContractError

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._specs: dict[str, OpenAPI] = {}

    def spec_name(self, path: str) -> str:
        return spec_name(path)

    def spec(self, name: str) -> OpenAPI:
        if name not in self._specs:
            self._specs[name] = load_spec(name, self.base_url)
        return self._specs[name]

    def check(self, response: requests.Response, *, request: bool = True) -> requests.Response:
        """Validate the call's request (unless told not to) and its response; returns it."""
        prepared = response.request
        path = urlsplit(str(prepared.url)).path
        app = self.spec(self.spec_name(path))
        openapi_request = RequestsOpenAPIRequest(prepared)
        if request:
            errors = list(app.iter_request_errors(openapi_request))
            if errors:
                raise ContractError(
                    f"{prepared.method} {path}: request breaks the spec: {describe(errors)}"
                )
        errors = list(app.iter_response_errors(openapi_request, RequestsOpenAPIResponse(response)))
        if errors:
            raise ContractError(
                f"{prepared.method} {path} -> {response.status_code}: response breaks the spec: "
                f"{describe(errors)}\nbody: {response.text[:2000]}"
            )
        return response


def describe(errors: list[Exception]) -> str:
    parts = []
    for error in errors:
        text = f"{type(error).__name__}: {error}"
        cause = error.__cause__
        schema_errors = getattr(cause, "schema_errors", None)
        if schema_errors:
            text += (
                " ["
                + "; ".join(
                    f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in schema_errors
                )
                + "]"
            )
        elif cause is not None:
            text += f" (cause: {cause})"
        parts.append(text)
    return " | ".join(parts)
