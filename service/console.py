"""The `mmlop` console script (``mmlop = "service.console:main"``): the library's commands,
the evaluation harness's `eval` group, the service's `tenant` group and the client's `remote`
group (``mmlop_client.cli``).

Inside a package, so every wheel or image built from the packages ships it; in `service`, not
`mmlop_core`, so the library stays free of service imports. The tenant commands touch the
database only when invoked.
"""
from __future__ import annotations

from mmlop_core.cli import app, main as _core_main

try:  # the service package is part of this distribution, but keep `mmlop info` working without it
    from service.cli_tenant import tenant_app
except ImportError:  # pragma: no cover - only when the service package is absent
    tenant_app = None
if tenant_app is not None:
    app.add_typer(tenant_app, name="tenant", help="Manage tenants and their API keys.")
from mmlop_core.eval.cli import eval_app; app.add_typer(eval_app, name="eval", help="Reproduce the paper's tables.")  # noqa: E402,E702
from mmlop_client.cli import remote_app; app.add_typer(remote_app, name="remote", help="Use a running service (MMLOP_URL, MMLOP_API_KEY).")  # noqa: E402,E702


def main() -> None:
    """Entry point of the `mmlop` console script."""
    _core_main()
