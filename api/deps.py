"""FastAPI dependencies as ``Annotated`` aliases: ``SessionDep``, ``TenantDep``, ..."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api import ratelimit
from api.problem import ProblemError
from service.blobs import BlobStore, get_blob_store
from service.db import get_sessionmaker
from service.models import Tenant
from service.settings import Settings, get_settings
from service.api_keys import touch_key
from service.tenants import authenticate_key

logger = logging.getLogger(__name__)


def get_session() -> Iterator[Session]:
    """A database session per request; rolled back if the request fails."""
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        try:
            session.close()
        except SQLAlchemyError:
            # The connection died (database restarted, network cut): the request has already
            # been answered (503 if it needed the database); drop the connection quietly.
            logger.warning("could not close a database session; its connection is discarded")


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _blobs() -> BlobStore:
    return get_blob_store()


BlobsDep = Annotated[BlobStore, Depends(_blobs)]


# Declares the scheme in the OpenAPI document (``security`` on every operation that depends on
# ``get_tenant``: the Authorize button of /docs); the header itself is parsed by ``get_tenant``.
_BEARER = HTTPBearer(auto_error=False, scheme_name="bearerAuth", description=(
    "the tenant's API key (`mmlop_...`, from `mmlop tenant create` or `POST /keys`) as "
    "`Authorization: Bearer <api key>`"))


def get_tenant(request: Request, response: Response, session: SessionDep,
               settings: SettingsDep, _scheme: object = Depends(_BEARER)) -> Tenant:
    """The tenant of the request's ``Authorization: Bearer <key>``; 401 otherwise.

    A client address with ``auth_failure_limit`` bad keys in the current window is refused
    (429 + ``Retry-After``) before any database lookup; each bad key counts one. Also counts
    the request against the tenant's rate limit (429 + ``Retry-After`` over it) and sets the
    ``RateLimit-*`` headers. An expired key (past its rotation overlap) is a 401 like a revoked
    one. Sets ``request.state.api_key_id`` and the key's ``last_used_at`` (throttled). The key
    itself is never logged.
    """
    challenge = {"WWW-Authenticate": 'Bearer realm="mmlop"'}
    address = request.client.host if request.client else "unknown"
    ratelimit.check_auth_failures(address, settings)  # before the lookup: 429 once over it
    header = request.headers.get("authorization")
    if not header:
        raise ProblemError(401, "missing Authorization: Bearer <api key> header",
                           kind="unauthorized", headers=challenge)
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ProblemError(401, "Authorization header must be 'Bearer <api key>'",
                           kind="unauthorized", headers=challenge)
    found = authenticate_key(session, key.strip())
    if found is None:
        ratelimit.record_auth_failure(address, settings)
        raise ProblemError(401, "invalid, expired or revoked API key", kind="unauthorized",
                           headers=challenge)
    row, tenant = found
    request.state.api_key_id = row.id  # /keys refuses to revoke it by accident
    if touch_key(session, row):  # at most once a minute per key; its commit expired ``tenant``:
        session.refresh(tenant)  # reload it here (a thread), not lazily in an async route
    state = ratelimit.enforce(tenant.id, settings)
    response.headers.update(state.headers())
    return tenant


TenantDep = Annotated[Tenant, Depends(get_tenant)]
