"""``/keys``: the calling key's tenant manages its own API keys (list, create, revoke, rotate).

Keys are never shown again after their creation: listings carry the id, name, prefix and times.
Another tenant's key id is a 404, like an unknown one. See ``service/api_keys.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

from api.adaptation_fields import check_name
from api.deps import SessionDep, TenantDep
from api.json_body import model_body
from api.problem import ProblemError
from api.text import ScrubbedModel
from service import api_keys
from service.models import ApiKey, as_utc
from service.tenants import key_is_active

router = APIRouter(prefix="/keys", tags=["keys"])

# SQLite returns naive datetimes; every stored time is UTC.
UtcTime = Annotated[datetime, AfterValidator(as_utc)]

_STATUS = {"not-found": 404, "current-key": 409, "last-key": 409, "key-inactive": 409,
           "too-many-keys": 409, "already-rotated": 409}


class ApiKeyPublic(ScrubbedModel):
    """An API key as its tenant sees it: never the key or its hash."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str | None = None
    prefix: str = Field(description="first 12 characters of the key, to recognise it")
    created_at: UtcTime
    last_used_at: UtcTime | None = Field(
        default=None, description="last authenticated request (updated at most once a minute)")
    expires_at: UtcTime | None = Field(
        default=None, description="the key stops working then (end of a rotation's overlap)")
    revoked_at: UtcTime | None = None
    active: bool = Field(description="neither revoked nor expired")
    current: bool = Field(default=False, description="the key that made this request")


class ApiKeyCreated(ApiKeyPublic):
    """A new key: ``key`` is shown only in this answer; store it now."""

    key: str = Field(description="the API key itself (shown once)",
                     examples=["mmlop_0aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789abcdEF"])


class ApiKeyList(BaseModel):
    """Every key of the tenant, oldest first (revoked and expired ones included)."""

    items: list[ApiKeyPublic]


class ApiKeyCreate(BaseModel):
    """Body of ``POST /keys``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = Field(default=None, max_length=100, examples=["ci"],
                             description="a label for the key (shown in listings): the rules of "
                                         "an adaptation's name (1..100 characters, no control "
                                         "or invisible formatting characters)")


class ApiKeyRotate(BaseModel):
    """Body of ``POST /keys/{key_id}/rotate``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    overlap_s: StrictInt = Field(default=api_keys.DEFAULT_OVERLAP_S, ge=0, le=api_keys.MAX_OVERLAP_S,
                           description="seconds the old key keeps working (default one day, at "
                                       "most seven)")


_create_body, _CREATE_BODY = model_body(ApiKeyCreate, required=False)
_rotate_body, _ROTATE_BODY = model_body(ApiKeyRotate, required=False)


def _public(row: ApiKey, request: Request, cls: type[ApiKeyPublic] = ApiKeyPublic,
            **extra: str) -> ApiKeyPublic:
    current = getattr(request.state, "api_key_id", None) == row.id
    return cls.model_validate({**{c: getattr(row, c) for c in (
        "id", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at")},
        "active": key_is_active(row), "current": current, **extra})


def _problem(exc: api_keys.ApiKeyError) -> ProblemError:
    return ProblemError(_STATUS[exc.reason], str(exc), kind=exc.reason)


@router.get("", response_model=ApiKeyList, summary="List the tenant's API keys")
def list_keys(request: Request, session: SessionDep, tenant: TenantDep) -> ApiKeyList:
    """Id, name, prefix, created, last used, expiry and revocation of every key of the tenant."""
    return ApiKeyList(items=[_public(r, request) for r in api_keys.list_keys(session, tenant.id)])


@router.post("", status_code=201, response_model=ApiKeyCreated, summary="Create an API key",
             openapi_extra={"x-problems": {409: ["too-many-keys"]}, **_CREATE_BODY})
def create_key(request: Request, session: SessionDep, tenant: TenantDep,
               body: ApiKeyCreate = Depends(_create_body)) -> ApiKeyCreated:
    """A new key for the tenant; the answer's ``key`` is the only time it is shown. A tenant
    holds at most 100 active keys (409 ``too-many-keys``)."""
    try:
        row, key = api_keys.create_key(session, tenant.id, name=check_name(body.name))
    except api_keys.ApiKeyError as exc:
        raise _problem(exc) from exc
    session.commit()
    return _public(row, request, ApiKeyCreated, key=key)


@router.delete("/{key_id}", status_code=204, summary="Revoke an API key",
               openapi_extra={"x-problems": {409: ["current-key", "last-key"]}})
def revoke_key(key_id: str, request: Request, session: SessionDep, tenant: TenantDep,
               allow_current: bool = Query(False, description="also revoke the key making this "
                                                              "request")) -> Response:
    """Revoke one key at once (idempotent). The key making the request is refused (409
    ``current-key``) unless ``allow_current=true``; the tenant's last active key is refused
    (409 ``last-key``): create another key first."""
    try:
        api_keys.revoke_key(session, tenant.id, key_id, allow_current=allow_current,
                            current_id=getattr(request.state, "api_key_id", None))
    except api_keys.ApiKeyError as exc:
        raise _problem(exc) from exc
    session.commit()
    return Response(status_code=204)


@router.post("/{key_id}/rotate", status_code=201, response_model=ApiKeyCreated,
             summary="Rotate an API key: a new key, the old one expires after an overlap",
             openapi_extra={"x-problems": {409: ["key-inactive", "already-rotated",
                                                 "too-many-keys"]}, **_ROTATE_BODY})
def rotate_key(key_id: str, request: Request, session: SessionDep, tenant: TenantDep,
               body: ApiKeyRotate = Depends(_rotate_body)) -> ApiKeyCreated:
    """Issue the key's successor (same name, shown once); the old key keeps working for
    ``overlap_s`` seconds, then answers 401. A revoked or expired key is 409 ``key-inactive``;
    a key already rotated (in its overlap, with an expiry) is 409 ``already-rotated``: rotate
    its successor instead, or revoke it to end the overlap now."""
    try:
        row, key = api_keys.rotate_key(session, tenant.id, key_id, overlap_s=body.overlap_s)
    except api_keys.ApiKeyError as exc:
        raise _problem(exc) from exc
    session.commit()
    return _public(row, request, ApiKeyCreated, key=key)
