"""``mmlop tenant ...``: create and revoke tenants (mounted by the core CLI as a sub-app).

    mmlop tenant create NAME     # prints the new API key once
    mmlop tenant revoke NAME     # revokes the tenant and all its keys
    mmlop tenant list
"""

from __future__ import annotations

import typer
from sqlalchemy import select

tenant_app = typer.Typer(help="Manage tenants and their API keys.", no_args_is_help=True)


@tenant_app.command("create")
def create(name: str = typer.Argument(..., help="unique tenant name")) -> None:
    """Create a tenant and print its API key (shown only this once)."""
    from service.db import session_scope
    from service.tenants import TenantError, create_tenant

    try:
        with session_scope() as session:
            tenant, key = create_tenant(session, name)
            tenant_id = tenant.id
    except TenantError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"tenant {name} created (id {tenant_id}); API key, shown only once:", err=True)
    typer.echo(key)


@tenant_app.command("key")
def new_key(name: str = typer.Argument(..., help="tenant name or id")) -> None:
    """Issue an additional API key for an existing tenant (printed once)."""
    from service.db import session_scope
    from service.tenants import TenantError, find_tenant, issue_key

    try:
        with session_scope() as session:
            tenant = find_tenant(session, name)
            if tenant.revoked_at is not None:
                raise TenantError(f"tenant {name!r} is revoked")
            key = issue_key(session, tenant)
    except TenantError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(key)


@tenant_app.command("revoke")
def revoke(name: str = typer.Argument(..., help="tenant name or id")) -> None:
    """Revoke a tenant: every one of its API keys stops working at once."""
    from service.db import session_scope
    from service.tenants import TenantError, revoke_tenant

    try:
        with session_scope() as session:
            count = revoke_tenant(session, name)
    except TenantError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"tenant {name} revoked ({count} key(s))")


@tenant_app.command("list")
def list_tenants() -> None:
    """List tenants (name, id, state)."""
    from service.db import session_scope
    from service.models import Tenant

    with session_scope() as session:
        for tenant in session.scalars(select(Tenant).order_by(Tenant.created_at)):
            state = "revoked" if tenant.revoked_at else "active"
            typer.echo(f"{tenant.name}\t{tenant.id}\t{state}")
