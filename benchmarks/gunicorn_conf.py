"""gunicorn settings for the benchmark run of ``examples.notify_app:app`` (``-c benchmarks/gunicorn_conf.py``).

Two hooks, nothing else (worker class, worker count, worker connections and the bind address
stay on the command line):

1. Open-files limit. A gevent worker holding N streams needs N + a few descriptors, but the
   usual soft ``RLIMIT_NOFILE`` is 1024. ``on_starting`` raises the master's soft limit to the
   hard limit (children inherit it) and ``post_fork`` does it again in the worker, so the worker
   has it even if the master was started some other way. The hard limit itself cannot be raised
   without privileges; it is 20000 on the benchmark machine, enough for 15,000 streams.

2. GC pause log (only when ``RTBROKER_BENCH_GC_LOG`` names a file). ``post_worker_init`` — which
   runs in the worker after gevent's monkey-patching — appends a ``gc.callbacks`` hook that
   times every collection (start -> stop, ``time.perf_counter``) and keeps
   ``(wall time, generation, seconds, collected)`` in memory; a greenlet writes the batch as
   JSON lines every 0.5 s, so the hook itself does no I/O inside the collector.

3. GC experiments (off unless set; used to test the report's GC findings, never by default):
   ``RTBROKER_BENCH_GC_THRESHOLD="700,10,10"`` calls ``gc.set_threshold`` in the worker;
   ``RTBROKER_BENCH_GC_FREEZE=SECONDS`` calls ``gc.freeze()`` that often, which moves every object
   alive at that moment (the streams' greenlets, frames, clients) out of the collector's reach.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import time


def _raise_nofile(log) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log.info("RLIMIT_NOFILE soft=%s hard=%s (pid %s)", *resource.getrlimit(resource.RLIMIT_NOFILE), os.getpid())


def on_starting(server) -> None:
    _raise_nofile(server.log)


def post_fork(server, worker) -> None:
    _raise_nofile(server.log)


def post_worker_init(worker) -> None:
    import gevent

    threshold = os.environ.get("RTBROKER_BENCH_GC_THRESHOLD")
    if threshold:
        gc.set_threshold(*(int(x) for x in threshold.split(",")))
        worker.log.info("gc thresholds %s", gc.get_threshold())
    freeze = float(os.environ.get("RTBROKER_BENCH_GC_FREEZE") or 0)
    if freeze > 0:
        def freeze_forever() -> None:
            while True:
                gevent.sleep(freeze)
                gc.freeze()

        gevent.spawn(freeze_forever)
        worker.log.info("gc.freeze() every %ss", freeze)
    path = os.environ.get("RTBROKER_BENCH_GC_LOG")
    if not path:
        return

    pending: list[tuple[float, int, float, int]] = []
    started = [0.0]
    clock = time.perf_counter

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = clock()
        else:
            pending.append((time.time(), info["generation"], clock() - started[0], info["collected"]))

    def flush_forever() -> None:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"pid": os.getpid(), "thresholds": gc.get_threshold()}) + "\n")
            out.flush()
            while True:
                gevent.sleep(0.5)
                if pending:
                    batch = pending[:]
                    del pending[: len(batch)]
                    out.write("".join(json.dumps(event) + "\n" for event in batch))
                    out.flush()

    gc.callbacks.append(on_gc)
    gevent.spawn(flush_forever)
    worker.log.info("GC pause log -> %s", path)
