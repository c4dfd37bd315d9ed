"""Does a backplane's listener leave the gevent hub free? One probe for every backend.

:func:`probe` runs, in a fresh monkey-patched interpreter, a backend's *setup* (Python lines
that define a started ``listener`` delivering into ``received`` and a ``publish()`` function)
beside a greenlet that ticks every 10 ms; ``publish()`` runs after 0.5 s, and after 1 s the
report says how often the greenlet ticked and what the listener received.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.live import ROOT

SCRIPT = """
import json, sys
__PREAMBLE__
from gevent import monkey
monkey.patch_all()
import time
import gevent
from flask_rtbroker.runtime.concurrency import GeventRuntime

ticks = 0
def tick():
    global ticks
    while True:
        gevent.sleep(0.01)
        ticks += 1

received = []
runtime = GeventRuntime(4)
__SETUP__
gevent.spawn(tick)
gevent.spawn_later(0.5, publish)
began, start_ticks = time.monotonic(), ticks
gevent.sleep(1.0)
report = {"ticks": ticks - start_ticks, "seconds": time.monotonic() - began, "state": listener.state,
          "received": [envelope.fields for envelope in received]}
__REPORT__
print(json.dumps(report))
"""


def probe(setup: str, *args: str, preamble: str = "", report: str = "") -> tuple[dict[str, Any], str]:
    """Run the probe with *setup* (``sys.argv[1:]`` are *args*); return its report and stderr.

    *preamble* runs before monkey-patching (e.g. to import a driver first); *report* may add
    keys to ``report``. Fails the test when the script does not exit cleanly.
    """
    script = SCRIPT.replace("__PREAMBLE__", preamble).replace("__SETUP__", setup).replace("__REPORT__", report)
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stderr
