"""The client's typed results against the served ``/openapi.json``, so that they cannot drift:
every dataclass the client exports maps to a schema (named in its docstring as ``Schema`` or by
its own name); each of its fields exists there with a compatible JSON type, and each required
schema field is a field of the dataclass. A field marked ``field(metadata={"openapi": False})``
does not come from the JSON body (an SSE frame's ``event`` and ``id``) and is not checked. And the key management calls on the real server."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import types
import typing
from datetime import datetime
from typing import Any

import httpx
import pytest

import mmlop_client
from mmlop_client import ApiKey, AsyncClient, Client, MMLoPAPIError, NewApiKey
from utils.factories import make_tenant

_PY_JSON = {str: {"string"}, int: {"integer"}, float: {"number", "integer"}, bool: {"boolean"},
            datetime: {"string"}, list: {"array"}, dict: {"object"}, type(None): {"null"}}


def _py_types(tp: Any) -> set[str]:
    """JSON types a value of annotation ``tp`` can be decoded from ({"any"} for Any)."""
    if tp is Any:
        return {"any"}
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return set().union(*(_py_types(a) for a in typing.get_args(tp)))
    base = typing.get_origin(tp) or tp
    if dataclasses.is_dataclass(base):
        return {"object"}
    return _PY_JSON[base]


def _schema_types(prop: dict, schemas: dict) -> set[str]:
    """JSON types the schema ``prop`` allows (enums of a $ref are their base type)."""
    if "$ref" in prop:
        target = schemas[prop["$ref"].rsplit("/", 1)[-1]]
        return {target.get("type", "object")} if "enum" in target else {"object"}
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return set().union(*(_schema_types(p, schemas) for p in prop[key]))
    kind = prop.get("type")
    return set(kind) if isinstance(kind, list) else {kind} if kind else {"any"}


def _schema_name(model: type, schemas: dict) -> str | None:
    named = [n for n in re.findall(r"``(\w+)``", model.__doc__ or "") if n in schemas]
    return named[0] if named else (model.__name__ if model.__name__ in schemas else None)


def _client_models() -> list[type]:
    return [obj for name in mmlop_client.__all__
            if dataclasses.is_dataclass(obj := getattr(mmlop_client, name)) and isinstance(obj, type)]


def drift(model: type, schema: dict, schemas: dict) -> list[str]:
    """What in ``model`` disagrees with ``schema`` (empty when it matches)."""
    hints = typing.get_type_hints(model)
    props, problems = schema.get("properties", {}), []
    for f in dataclasses.fields(model):
        if f.metadata.get("openapi") is False:  # not from the JSON body (an SSE frame's id)
            continue
        if f.name not in props:
            problems.append(f"{f.name}: not in the schema (a member that is not part of the "
                            "JSON body: field(metadata={'openapi': False}))")
            continue
        served, local = _schema_types(props[f.name], schemas), _py_types(hints[f.name])
        if "any" not in local and "any" not in served and not served <= local:
            problems.append(f"{f.name}: schema {sorted(served)} vs client {sorted(local)}")
        if hints[f.name] is datetime and props[f.name].get("format") != "date-time":
            problems.append(f"{f.name}: not a date-time in the schema")
    problems += [f"{name}: required by the schema, missing in the client"
                 for name in schema.get("required", []) if name not in hints]
    return problems


def test_drift_check_catches_a_wrong_model():
    @dataclasses.dataclass
    class PredictionPublic:
        """(``PredictionPublic``)"""
        label: int
        extra: str

    schemas = {"PredictionPublic": {"properties": {"label": {"type": "string"},
                                                   "score": {"type": "number"}},
                                    "required": ["label", "score"]}}
    assert drift(PredictionPublic, schemas["PredictionPublic"], schemas) == [
        "label: schema ['string'] vs client ['integer']",
        "extra: not in the schema (a member that is not part of the JSON body: "
        "field(metadata={'openapi': False}))",
        "score: required by the schema, missing in the client"]


def test_models_match_the_served_openapi_schema(embedded_stack):
    served = httpx.get(embedded_stack.base_url + "/openapi.json", timeout=30).json()
    schemas = served["components"]["schemas"]
    models = _client_models()
    assert {ApiKey, NewApiKey, mmlop_client.Adaptation} <= set(models)
    for model in models:
        name = _schema_name(model, schemas)
        assert name, f"{model.__name__}: no schema of that name in /openapi.json"
        assert drift(model, schemas[name], schemas) == [], (model.__name__, name)


def test_key_management_calls(embedded_stack):
    _, key = make_tenant(embedded_stack.database_url)
    with Client(embedded_stack.base_url, key, max_retries=0) as c:
        [mine] = c.keys()
        assert mine.current and mine.active and mine.last_used_at is not None
        with pytest.raises(MMLoPAPIError) as info:
            c.revoke_key(mine.id)
        assert (info.value.status, info.value.kind) == (409, "current-key")
        spare = c.create_key("spare")
        assert isinstance(spare, NewApiKey) and spare.key.startswith("mmlop_")
        assert spare.name == "spare" and not spare.current
        rotated = c.rotate_key(mine.id, overlap_s=0)
        assert rotated.name is None and rotated.key not in (key, spare.key)
        with pytest.raises(MMLoPAPIError) as info:
            c.keys()  # its overlap was 0: the old key has expired
        assert info.value.status == 401
    with Client(embedded_stack.base_url, rotated.key, max_retries=0) as c:
        c.revoke_key(spare.id)
        states = {k.id: (k.active, k.expires_at is not None) for k in c.keys()}
    assert states == {mine.id: (False, True), spare.id: (False, False), rotated.id: (True, False)}

    async def run() -> list[ApiKey]:
        async with AsyncClient(embedded_stack.base_url, rotated.key, max_retries=0) as ac:
            extra = await ac.create_key()
            newer = await ac.rotate_key(extra.id, overlap_s=60)
            await ac.revoke_key(newer.id)
            return await ac.keys()

    assert len(asyncio.run(run())) == 5
