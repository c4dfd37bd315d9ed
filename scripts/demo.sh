#!/usr/bin/env bash
# Set up and run the live counter demo on http://127.0.0.1:5000 (PORT=... to change it).
#   bash scripts/demo.sh
# Installs: a virtualenv in .venv with the package (and gunicorn with its gevent worker), and the browser SDK
# (examples/demo, from package-lock.json). Set RTBROKER_BACKPLANE=redis://... and
# WEB_CONCURRENCY=4 to run several workers sharing one Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v npm >/dev/null 2>&1 || { echo "scripts/demo.sh: Node.js and npm are required for the browser SDK" >&2; exit 1; }
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[redis,gunicorn]'
npm ci --prefix examples/demo --no-audit --no-fund --loglevel=error
echo "Open http://127.0.0.1:${PORT:-5000} in a browser (Ctrl-C stops the demo)."
exec .venv/bin/gunicorn -c examples/demo/gunicorn.conf.py
