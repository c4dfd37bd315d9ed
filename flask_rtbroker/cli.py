"""The ``flask rtbroker`` command group."""

from __future__ import annotations

from typing import Any, Protocol

import click
from flask.cli import AppGroup

from .protocol import encoding


class Figures(Protocol):
    """What the commands read of the extension (:class:`~flask_rtbroker.extension.RealtimeBroker`)."""

    def stats(self) -> dict[str, Any]: ...

    def count_clients(self, timeout: float = 0.5) -> int: ...


def create_cli(extension: Figures) -> AppGroup:
    """Build the ``rtbroker`` command group for *extension*."""
    group = AppGroup("rtbroker", help="Realtime broker commands (flask_rtbroker).")

    @group.command("stats")
    @click.option("--cluster", is_flag=True, help="Also count the clients of every process on the backplane.")
    def stats(cluster: bool) -> None:
        """Print this process's broker figures as JSON.

        A `flask` command runs in its own process, so only --cluster (through the backplane)
        sees the clients of the running web workers.
        """
        figures = extension.stats()
        if cluster:
            figures["cluster_clients"] = extension.count_clients(timeout=1.0)
        click.echo(encoding.dumps_sorted(figures).decode())

    @group.command("triggers-sql")
    @click.option("--remove", is_flag=True, help="The SQL that drops the triggers instead.")
    def triggers_sql(remove: bool) -> None:
        """Print the SQL of the capture triggers of every watch(..., capture="database"), for a migration."""
        for _, sql in _captured_sql(remove):
            click.echo(sql)

    @group.command("install-triggers")
    def install_triggers() -> None:
        """Install (or replace) the capture triggers of every watch(..., capture="database")."""
        _run_captured_sql(remove=False)

    @group.command("remove-triggers")
    def remove_triggers() -> None:
        """Drop the capture triggers of every watch(..., capture="database")."""
        _run_captured_sql(remove=True)

    return group


def _captured_sql(remove: bool) -> list[tuple[Any, str]]:
    from flask import current_app

    from .records.registry import RECORDS_EXTENSION_KEY

    records = current_app.extensions.get(RECORDS_EXTENSION_KEY)
    statements = records.trigger_sql(remove=remove) if records is not None else []
    if not statements:
        raise click.ClickException('no model is watched with capture="database" in this app')
    return statements


def _run_captured_sql(remove: bool) -> None:
    from .records.capture import run_sql

    for engine, sql in _captured_sql(remove):
        run_sql(engine, sql)
        click.echo(f"{'removed' if remove else 'installed'} the capture triggers on {engine.url!r}")
