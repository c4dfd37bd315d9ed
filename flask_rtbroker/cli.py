"""The ``flask rtbroker`` command group."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from flask.cli import AppGroup

from . import encoding

if TYPE_CHECKING:
    from .extension import RealtimeBroker


def create_cli(extension: "RealtimeBroker") -> AppGroup:
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

    return group
