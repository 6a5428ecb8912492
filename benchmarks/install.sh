#!/usr/bin/env bash
# Installs every server and load tool the benchmarks compare (Debian + PyPI only).
# Servers or tools that fail to install are skipped by `python -m benchmarks`, with a note.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    wrk nghttp2-client apache2 apache2-utils libapache2-mod-wsgi-py3 slowhttptest openssl
fi

python -m pip install -q -e '.[test,uvloop]'
python -m pip install -q matplotlib gunicorn waitress uvicorn granian trustme py-spy pyinstrument
