#!/usr/bin/env bash
# Set up everything the full test suite needs on a fresh machine, then run it.
#   bash scripts/test.sh [pytest args...]
# Installs: a virtualenv in .venv with the package and its test extras, the JS SDK test
# dependencies (tests/js, from package-lock.json) and, when missing, Debian's chromium,
# redis-server, postgresql, nginx and iproute2 (root only; otherwise it stops and says what to install).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need_apt+=(iproute2)
if ((${#need_apt[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: please install ${need_apt[*]} (Debian: apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
fi
command -v node >/dev/null 2>&1 || { echo "scripts/test.sh: Node.js 20+ and npm are required" >&2; exit 1; }

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,redis,sqlalchemy]'
if [ -f tests/js/package-lock.json ]; then
  npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
fi

exec .venv/bin/python -m pytest "$@"
