"""The OpenAPI document and the /docs page: the limits the handlers enforce declared in the document
(`declare_limits`), and /docs served offline from the `swagger-ui-bundle` package (`offline_docs`) with a
document its Swagger UI renders (`as_openapi_30`: the bundled UI reads OpenAPI 3.0, FastAPI writes 3.1)."""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from pathlib import Path
from typing import Any

from .settings import Settings


def declare_limits(schema: dict, settings: Settings) -> dict:
    """Declare in the OpenAPI document (in place) the limits the handlers enforce beyond what the route
    signatures say, so that the document accepts nothing the server refuses: 1 to `max_enroll_images` images
    per enrolment, 1 to `max_batch_images` per batch (/v1/identify's `images`, /v1/embed), /v1/identify's two
    forms (one `image`, or `images`), names and claims of 1 to `MAX_NAME_LENGTH` characters, /v1/verify's two forms (a claim and
    its image, or images a and b)."""
    from ..gallery.names import MAX_NAME_LENGTH

    name = {"minLength": 1, "maxLength": MAX_NAME_LENGTH}

    def limit_string(prop: dict, limits: dict) -> None:
        for branch in prop.get("anyOf", [prop]):
            if branch.get("type") == "string":
                branch.update(limits)

    for body_name, body in schema.get("components", {}).get("schemas", {}).items():
        props = body.get("properties", {})
        batch = body_name.startswith(("Body_identify", "Body_embed"))
        for branch in props.get("images", {}).get("anyOf", [props.get("images", {})]):
            if branch.get("type") == "array":
                branch.update(minItems=1, maxItems=settings.max_batch_images if batch else settings.max_enroll_images)
        if body_name.startswith("Body_identify"):
            body["oneOf"] = [{"required": ["image"]}, {"required": ["images"]}]
        for field in ("name", "claim"):
            if field in props:
                limit_string(props[field], name)
        if body_name.startswith("Body_verify"):
            body["oneOf"] = [{"required": ["claim", "image"]}, {"required": ["a", "b"]}]
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter.get("name") == "name":
                    parameter["schema"].update(name)
    schema.setdefault("info", {})["description"] = (
        schema["info"].get("description", "")
        + f" Limits: a request body of at most {settings.max_upload_bytes} bytes (413), at most "
        f"{settings.max_batch_images} images in a batch's field `images` (413 `too-many-images`), images of at most "
        f"{settings.max_pixels} pixels (400), {settings.max_faces} faces identified per image, "
        f"{settings.time_budget_s:g} s of work per request (503 `over-time-budget`)."
    )
    return schema


#: The document /docs renders: /openapi.json as OpenAPI 3.0 (`as_openapi_30`).
DOCS_OPENAPI_URL = "/docs-openapi.json"
#: Keywords of a JSON Schema that OpenAPI 3.0's schema objects do not have, dropped (they only document).
_NOT_IN_30 = ("$schema", "$id", "contentMediaType", "contentEncoding", "examples", "const", "if", "then", "else")


def as_openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.1 document as OpenAPI 3.0.3, for the bundled Swagger UI (4.x renders 3.0 only): a type
    ``null`` becomes ``nullable``, numeric exclusive bounds become boolean ones, ``const`` an enum of one, an
    uploaded file's content media type ``format: binary``, ``examples`` one ``example``. The same routes,
    fields and limits; /openapi.json stays the 3.1 document."""
    out = _schema_30(copy.deepcopy(document))
    out["openapi"] = "3.0.3"
    return out


#: Keys whose value maps names (of fields, paths, statuses ...) to objects: their names are never keywords.
_MAPPINGS = frozenset(
    {"properties", "patternProperties", "paths", "schemas", "responses", "content", "headers", "securitySchemes"}
)


def _schema_30(node: Any) -> Any:
    if isinstance(node, list):
        return [_schema_30(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    for key in ("anyOf", "oneOf"):  # before the branches are converted: X or null is X, nullable
        branches = node.get(key)
        if isinstance(branches, list) and {"type": "null"} in branches:
            rest = [b for b in branches if b != {"type": "null"}]
            del node[key]
            if len(rest) == 1 and isinstance(rest[0], dict):
                node = {**rest[0], **node}
            elif rest:
                node[key] = rest
            node["nullable"] = True
    node = {
        k: {name: _schema_30(v) for name, v in value.items()}
        if k in _MAPPINGS and isinstance(value, dict)
        else _schema_30(value)
        for k, value in node.items()
    }
    kind = node.get("type")
    if isinstance(kind, list):
        named = [t for t in kind if t != "null"]
        if "null" in kind:
            node["nullable"] = True
        if len(named) == 1:
            node["type"] = named[0]
        else:
            del node["type"]
            if named:
                node["anyOf"] = [{"type": t} for t in named]
    elif kind == "null":
        del node["type"]
        node["nullable"] = True
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(bound)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            node[limit], node[bound] = value, True
    if "const" in node and isinstance(node.get("const"), (str, int, float, bool)):
        node["enum"] = [node["const"]]
    if node.get("contentMediaType") and node.get("type") == "string":
        node.setdefault("format", "binary")
    if isinstance(node.get("examples"), list) and node["examples"] and "example" not in node:
        node["example"] = node["examples"][0]
    for keyword in _NOT_IN_30:
        value = node.get(keyword)
        if keyword == "examples" and isinstance(value, dict):
            continue  # a media type's or parameter's examples (named): OpenAPI 3.0 has them too
        node.pop(keyword, None)
    return node


def offline_docs(app) -> None:
    """/docs from the Swagger UI files of the `swagger-ui-bundle` package (FastAPI's default page loads them
    from a CDN, which an offline machine cannot reach); without that package, /docs says where the OpenAPI
    document is."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:

        @app.get("/docs", include_in_schema=False)
        async def docs_without_ui():
            return HTMLResponse(
                '<p>The OpenAPI document is at <a href="/openapi.json">/openapi.json</a> '
                '(install swagger-ui-bundle for the interactive page).</p>'
            )

        return

    # Only the three files the page loads: the package also holds Swagger's demo page, which fetches its
    # example API from the internet, and source maps nobody needs.
    served = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"}

    @app.get("/docs-static/{name}", include_in_schema=False)
    async def docs_static(name: str):
        if name not in served:
            return JSONResponse({"error": "not-found", "detail": "no such file"}, status_code=404)
        return FileResponse(Path(swagger_ui_path) / name)

    converted: list[dict[str, Any]] = []  # made once, at the first request (the document does not change)

    @app.get(DOCS_OPENAPI_URL, include_in_schema=False)
    async def docs_openapi():
        if not converted:
            converted.append(as_openapi_30(app.openapi()))
        return JSONResponse(converted[0])

    @app.get("/docs", include_in_schema=False)
    async def docs():
        page = get_swagger_ui_html(
            openapi_url=DOCS_OPENAPI_URL,
            title="siamface API",
            swagger_js_url="/docs-static/swagger-ui-bundle.js",
            swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon-32x32.png",
        )
        page.headers["Content-Security-Policy"] = _docs_policy(page.body.decode("utf-8"))
        return page


def _docs_policy(html: str) -> str:
    """The Content-Security-Policy of /docs: the page is of this origin, where the web page keeps its key (the
    tab's sessionStorage) and the camera may be allowed, so it runs only the Swagger UI file served here and
    its own inline start-up script (by hash), talks to this server only, and may not be framed."""
    inline = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline)
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
