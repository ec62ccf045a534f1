"""``mmlop tenant ...``: create and revoke tenants (mounted by the core CLI as a sub-app).

    mmlop tenant create NAME     # prints the new API key once
    mmlop tenant revoke NAME     # revokes the tenant and all its keys
    mmlop tenant list
    mmlop tenant keys NAME       # its keys: id, prefix, name, created, last used, expiry, state
    mmlop tenant revoke-key KEY  # revokes one key (its id or prefix)
"""

from __future__ import annotations

import functools

import typer
from sqlalchemy import select

tenant_app = typer.Typer(help="Manage tenants and their API keys.", no_args_is_help=True)


def _one_line_errors(fn):
    """Tenant and database errors print one ``error: ...`` line and exit 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from sqlalchemy.exc import SQLAlchemyError

        from service.tenants import TenantError
        try:
            return fn(*args, **kwargs)
        except TenantError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            typer.echo(f"error: database unavailable or busy ({reason}); check MMLOP_DATABASE_URL and retry", err=True)
            raise typer.Exit(2) from exc
    return wrapper


@tenant_app.command("create")
@_one_line_errors
def create(name: str = typer.Argument(..., help="unique tenant name")) -> None:
    """Create a tenant and print its API key (shown only this once)."""
    from service.db import session_scope
    from service.tenants import create_tenant

    with session_scope() as session:
        tenant, key = create_tenant(session, name)
        tenant_id = tenant.id
    typer.echo(f"tenant {name} created (id {tenant_id}); API key, shown only once:", err=True)
    typer.echo(key)


@tenant_app.command("key")
@_one_line_errors
def new_key(name: str = typer.Argument(..., help="tenant name or id")) -> None:
    """Issue an additional API key for an existing tenant (printed once)."""
    from service.db import session_scope
    from service.tenants import TenantError, find_tenant, issue_key

    with session_scope() as session:
        tenant = find_tenant(session, name)
        if tenant.revoked_at is not None:
            raise TenantError(f"tenant {name!r} is revoked")
        key = issue_key(session, tenant)
    typer.echo(key)


@tenant_app.command("revoke")
@_one_line_errors
def revoke(name: str = typer.Argument(..., help="tenant name or id")) -> None:
    """Revoke a tenant: every one of its API keys stops working at once."""
    from service.db import session_scope
    from service.tenants import revoke_tenant

    with session_scope() as session:
        count = revoke_tenant(session, name)
    typer.echo(f"tenant {name} revoked ({count} key(s))")


@tenant_app.command("list")
@_one_line_errors
def list_tenants() -> None:
    """List tenants (name, id, state)."""
    from service.db import session_scope
    from service.models import Tenant

    with session_scope() as session:
        for tenant in session.scalars(select(Tenant).order_by(Tenant.created_at)):
            state = "revoked" if tenant.revoked_at else "active"
            typer.echo(f"{tenant.name}\t{tenant.id}\t{state}")


def _when(value) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else "-"


@tenant_app.command("keys")
@_one_line_errors
def list_keys(name: str = typer.Argument(..., help="tenant name or id")) -> None:
    """List a tenant's API keys, oldest first: id, prefix, name, created, last used, expires,
    state (active | expired | revoked). Never the keys themselves."""
    from service.api_keys import list_keys as keys_of
    from service.db import session_scope
    from service.models import as_utc
    from service.tenants import find_tenant, key_is_active

    typer.echo("id\tprefix\tname\tcreated\tlast_used\texpires\tstate")
    with session_scope() as session:
        for k in keys_of(session, find_tenant(session, name).id):
            state = ("revoked" if k.revoked_at else "active" if key_is_active(k) else "expired")
            times = [_when(t and as_utc(t)) for t in (k.created_at, k.last_used_at, k.expires_at)]
            typer.echo("\t".join([k.id, k.prefix, k.name or "-", *times, state]))


@tenant_app.command("revoke-key")
@_one_line_errors
def revoke_key(key: str = typer.Argument(..., help="key id, or its prefix as `keys` lists it")
               ) -> None:
    """Revoke one API key at once (the tenant's other keys keep working). Like the API, the
    tenant's last active key is refused: issue another (`mmlop tenant key`) or revoke the
    tenant."""
    from service import api_keys
    from service.db import session_scope
    from service.models import ApiKey
    from service.tenants import TenantError

    with session_scope() as session:
        rows = session.scalars(select(ApiKey).where((ApiKey.id == key) | (ApiKey.prefix == key))
                               ).all()
        if len(rows) != 1:
            raise TenantError(f"no API key {key!r}" if not rows else
                              f"{len(rows)} keys have the prefix {key!r}; give the key id")
        row = api_keys.revoke_key(session, rows[0].tenant_id, rows[0].id)
        prefix = row.prefix
    typer.echo(f"key {prefix} revoked")
