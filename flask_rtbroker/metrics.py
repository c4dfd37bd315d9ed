"""The ``RTBROKER_METRICS_PATH`` endpoint: this process's figures, or every worker's.

Without ``prometheus_client`` (or without ``PROMETHEUS_MULTIPROC_DIR``) a scrape gets the
figures of the process that answered it, in the hand-written text of :mod:`.stats`. With
``prometheus_client`` installed (``pip install 'flask-rtbroker[prometheus]'``) and
``PROMETHEUS_MULTIPROC_DIR`` set, as for gunicorn's several workers, each process copies its
figures into prometheus_client's per-process files every :data:`EXPORT_INTERVAL` seconds (and
the answering one at the scrape), and the scrape reads every file: gauges of live processes
summed (``livesum``; the queue high-water mark ``livemax``), counters summed over every
process that ran since the directory was emptied. Gunicorn must tell it when a worker exits:
``from flask_rtbroker.metrics import child_exit`` in its config file.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Literal

from flask import Response

from .stats import HELP, prometheus_text

if TYPE_CHECKING:
    from .state import BrokerState

log = logging.getLogger("flask_rtbroker")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
EXPORT_INTERVAL = 1.0
"""Seconds between two copies of a process's figures into its prometheus_client files."""
PREFIX = "rtbroker_"
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_GAUGES = frozenset({"queue_high_water"})
"""Gauges combined over processes by their maximum (``livemax``); the others are summed (``livesum``)."""


def multiprocess_enabled() -> bool:
    """True when ``PROMETHEUS_MULTIPROC_DIR`` is set and prometheus_client can be imported."""
    if not os.environ.get(MULTIPROC_ENV):
        return False
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


class _Exporter:
    """This process's prometheus_client metrics, and the counter values already copied into them."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        self.pid = os.getpid()
        self.gauges: dict[str, Any] = {}
        self.counters: dict[str, Any] = {}
        for name, (kind, text) in HELP.items():
            if kind == "gauge":
                mode: Literal["livemax", "livesum"] = "livemax" if name in MAX_GAUGES else "livesum"
                self.gauges[name] = Gauge(PREFIX + name, text, registry=None, multiprocess_mode=mode)
            else:
                self.counters[name] = Counter(PREFIX + name.removesuffix("_total"), text, registry=None)
        self.disconnects = Counter(PREFIX + "disconnects", "Streams ended, by reason.", ["reason"], registry=None)
        self.copied: dict[Any, float] = {}

    def _add(self, counter: Any, key: Any, value: float) -> None:
        grown = value - self.copied.get(key, 0)
        if grown > 0:
            counter.inc(grown)
            self.copied[key] = value

    def export(self, stats: dict[str, Any]) -> None:
        """Copy *stats* (:meth:`BrokerState.stats`) into this process's files."""
        for name, value in stats.items():
            if name == "disconnects_total":
                for reason, count in value.items():
                    self._add(self.disconnects.labels(reason=reason), ("disconnects", reason), count)
            elif name in self.gauges:
                self.gauges[name].set(value)
            elif name in self.counters:
                self._add(self.counters[name], name, value)


_exporter: _Exporter | None = None
_exporting_pid: int | None = None
"""The process whose figures are being copied; one app's broker per process in this mode."""


def export(state: "BrokerState") -> None:
    """Copy this process's figures into its prometheus_client files (multiprocess mode only)."""
    global _exporter
    if _exporter is None or _exporter.pid != os.getpid():
        _exporter = _Exporter()
    _exporter.export(state.stats())


def start_exporting(state: "BrokerState") -> None:
    """In multiprocess mode, copy this process's figures every :data:`EXPORT_INTERVAL` seconds
    from now on (once per process: a forked worker starts its own); otherwise do nothing."""
    global _exporting_pid
    pid = os.getpid()
    if state.settings.metrics_path is None or _exporting_pid == pid or not multiprocess_enabled():
        return
    _exporting_pid = pid

    def keep_exporting() -> None:
        while not state.closed and os.getpid() == pid:
            try:
                export(state)
            except Exception:  # a full disk, a removed directory: the next round tries again
                log.exception("could not copy the realtime figures for %s", MULTIPROC_ENV)
            state.runtime.sleep(EXPORT_INTERVAL)

    state.runtime.spawn(keep_exporting)


def metrics_response(state: "BrokerState") -> Response:
    """The broker's figures in the Prometheus text format: every worker's in multiprocess
    mode, else this process's."""
    if not multiprocess_enabled():
        return Response(prometheus_text(state.stats()), content_type=TEXT_CONTENT_TYPE)
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    start_exporting(state)
    export(state)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def child_exit(server: Any, worker: Any) -> None:
    """Gunicorn's ``child_exit`` hook: drop an exited worker's live gauges (its clients are
    gone), keeping its counters. Import it into the gunicorn config file."""
    if multiprocess_enabled():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
