"""MkDocs hook: the CLI and HTTP reference pages, generated at build time (offline) from the code itself.

reference/cli.md: every command's --help, walked from siamface.cli.build_parser()'s argparse tree.
reference/http.md: every route of the service, from create_app(...).openapi() (no server is started, no
gallery is opened: the schema is built from the routes alone).
"""

from __future__ import annotations

import argparse
import json

from mkdocs.structure.files import File, Files

NOTE = "<!-- generated at build time by tools/docs_hooks.py: edit the code, not this page -->\n"


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def _walk(parser: argparse.ArgumentParser, path: list[str], out: list[str]) -> None:
    children = _subcommands(parser)
    if path:
        out.append(f"{'#' * min(len(path) + 1, 4)} siamface {' '.join(path)}\n")
        out.append("```text\n" + parser.format_help().rstrip() + "\n```\n")
    for name, child in children:
        _walk(child, [*path, name], out)


def cli_reference() -> str:
    from siamface.cli import build_parser

    parser = build_parser()
    parser.prog = "siamface"
    out = [
        "# Command line reference\n",
        NOTE,
        "Every command and its options, as `siamface COMMAND --help` prints them. Exit codes: 0 success "
        "(same person, granted, known), 1 a negative answer (different, denied, unknown, no face), 2 an error.\n",
        "```text\n" + parser.format_help().rstrip() + "\n```\n",
    ]
    _walk(parser, [], out)
    return "\n".join(out)


def _schema_type(schema: dict) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_schema_type(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {_schema_type(schema.get('items', {}))}"
    return str(schema.get("type", "object"))


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def http_reference() -> str:
    from siamface.service import create_app
    from siamface.service.settings import Settings

    spec = create_app(Settings(gallery="reference.db")).openapi()
    out = [
        "# HTTP reference\n",
        NOTE,
        f"The routes of `siamface serve` (OpenAPI {spec.get('openapi', '')}, API version "
        f"{spec['info'].get('version', '')}). A running server serves the same schema at `/openapi.json` and "
        "an interactive page at `/docs`. Every route but `GET /v1/health` needs a key "
        "(`Authorization: Bearer KEY` or `X-API-Key: KEY`); see [the service](../service.md) for roles.\n",
    ]
    schemas = spec.get("components", {}).get("schemas", {})
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            out.append(f"## {method.upper()} {path}\n")
            if op.get("summary"):
                out.append(f"**{_cell(op['summary'])}**\n")
            if op.get("description"):
                out.append(op["description"].strip() + "\n")
            params = op.get("parameters", [])
            if params:
                out.append("| parameter | in | type | required |\n|---|---|---|---|")
                for p in params:
                    kind = _schema_type(p.get("schema", {}))
                    out.append(f"| `{p['name']}` | {p['in']} | {_cell(kind)} | {p.get('required', False)} |")
                out.append("")
            body = op.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                ref = content.get("schema", {})
                fields = schemas.get(_schema_type(ref), {}).get("properties", {}) if "$ref" in ref else {}
                required = set(schemas.get(_schema_type(ref), {}).get("required", [])) if "$ref" in ref else set()
                out.append(f"Body: `{media}`\n")
                if fields:
                    out.append("| field | type | required | description |\n|---|---|---|---|")
                    for name, f in fields.items():
                        desc = _cell(f.get("description", f.get("title", "")))
                        out.append(f"| `{name}` | {_cell(_schema_type(f))} | {name in required} | {desc} |")
                    out.append("")
            responses = op.get("responses", {})
            if responses:
                out.append("| status | meaning |\n|---|---|")
                for code, r in responses.items():
                    out.append(f"| {code} | {_cell(r.get('description', ''))} |")
                out.append("")
    out.append("## The schema\n")
    out.append("```json\n" + json.dumps(spec, indent=1) + "\n```\n")
    return "\n".join(out)


def on_files(files: Files, config) -> Files:
    for name, make in (("reference/cli.md", cli_reference), ("reference/http.md", http_reference)):
        files.append(File.generated(config, name, content=make()))
    return files
