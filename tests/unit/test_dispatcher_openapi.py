"""The OpenAPI document: valid OpenAPI 3.1, and it describes what the server accepts."""

from __future__ import annotations

from typing import Any

from dispatcher import openapi_document


def test_the_document_is_valid_openapi_3_1() -> None:
    import openapi_spec_validator as validator

    validator.validate(openapi_document())


def _scheme(path: str) -> str | None:
    """Who may call ``path``: the admin (its API, and the platform-wide metrics) or a tenant."""
    if path == "/metrics" or path.startswith("/v1/admin/"):
        return "adminToken"
    if path.startswith("/v1/links/"):
        return None  # an approval link: its token is the credential
    if path.startswith("/v1/hooks/"):
        return None  # a webhook's delivery: its signature is the credential
    return "apiKey" if path.startswith("/v1/") else None


def test_every_operation_documents_its_errors_and_security() -> None:
    document = openapi_document()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            scheme = _scheme(path)
            if scheme is not None:
                assert operation["security"] == [{scheme: []}], (path, method)
                assert "401" in responses, (path, method)
            if "requestBody" in operation:
                assert {"400", "413", "415"} <= set(responses), (path, method)


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    name = schema["$ref"].rsplit("/", 1)[1]
    resolved: dict[str, Any] = document["components"]["schemas"][name]
    return resolved


def test_request_bodies_come_from_the_models_that_parse_them() -> None:
    document = openapi_document()
    upload = document["paths"]["/v1/workflows/{name}"]["put"]["requestBody"]
    schema = _resolve(document, upload["content"]["application/json"]["schema"])
    assert set(schema["properties"]) == {"sandbox", "source", "class_name", "wasm_base64", "flow"}
    assert schema["additionalProperties"] is False
    policy = document["components"]["schemas"]["Policy"]
    assert policy["properties"]["memory_mb"]["default"] == 256
    assert policy["additionalProperties"] is False


def _models(document: dict[str, Any]) -> dict[str, Any]:
    """The request body schemas that are objects (the event payload is any JSON value)."""
    found = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            schema = operation.get("requestBody", {}).get("content", {})
            ref = schema.get("application/json", {}).get("schema", {}).get("$ref")
            if ref and not ref.endswith("/JsonValue"):
                found[(path, method)] = _resolve(document, {"$ref": ref})
    return found


def test_every_object_body_refuses_unknown_fields() -> None:
    document = openapi_document()
    models = _models(document)
    assert len(models) >= 6
    for where, schema in models.items():
        assert schema["additionalProperties"] is False, where


def test_stored_json_is_described_as_json_without_nul() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    params = schemas["NewInstanceBody"]["properties"]["params"]
    assert params["$ref"] == "#/components/schemas/JsonValue"
    assert schemas["Policy"]["properties"]["vars"]["additionalProperties"] == {
        "$ref": params["$ref"]
    }
    text = schemas["JsonValue"]["anyOf"][1]
    assert text == {"type": "string", "pattern": "^[^\\x00]*$"}
    integers = {"type": "integer", "minimum": -(2**53), "maximum": 2**53}
    assert integers in schemas["JsonValue"]["anyOf"]


def test_path_parameters_say_which_names_exist() -> None:
    document = openapi_document()
    for path, operations in document["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    assert "pattern" in parameter["schema"], (path, parameter)
                    assert "maxLength" in parameter["schema"], (path, parameter)


def test_links_lead_to_operations_that_take_their_parameters() -> None:
    document = openapi_document()
    links = [
        link
        for operations in document["paths"].values()
        for operation in operations.values()
        for response in operation["responses"].values()
        for link in response.get("links", {}).values()
    ]
    assert len(links) >= 13
    for link in links:
        pointer = link["operationRef"].removeprefix("#/paths/")
        path, _, method = pointer.rpartition("/")
        target = document["paths"][path.replace("~1", "/").replace("~0", "~")][method]
        names = {p["name"] for p in target["parameters"] if p["in"] == "path"}
        assert set(link["parameters"]) <= names, link
