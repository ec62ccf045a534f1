"""FastAPI dependencies as ``Annotated`` aliases: ``SessionDep``, ``TenantDep``, ..."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.problem import ProblemError
from service.blobs import BlobStore, get_blob_store
from service.db import get_sessionmaker
from service.models import Tenant
from service.settings import Settings, get_settings
from service.tenants import authenticate


def get_session() -> Iterator[Session]:
    """A database session per request; rolled back if the request fails."""
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _blobs() -> BlobStore:
    return get_blob_store()


BlobsDep = Annotated[BlobStore, Depends(_blobs)]


def get_tenant(request: Request, session: SessionDep) -> Tenant:
    """The tenant of the request's ``Authorization: Bearer <key>``; 401 otherwise."""
    challenge = {"WWW-Authenticate": 'Bearer realm="mmlop"'}
    header = request.headers.get("authorization")
    if not header:
        raise ProblemError(401, "missing Authorization: Bearer <api key> header",
                           kind="unauthorized", headers=challenge)
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ProblemError(401, "Authorization header must be 'Bearer <api key>'",
                           kind="unauthorized", headers=challenge)
    tenant = authenticate(session, key.strip())
    if tenant is None:
        raise ProblemError(401, "invalid or revoked API key", kind="unauthorized", headers=challenge)
    return tenant


TenantDep = Annotated[Tenant, Depends(get_tenant)]
