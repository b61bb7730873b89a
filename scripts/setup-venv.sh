#!/usr/bin/env bash
# Create .venv at the repository root and install teleconsult into it (with EXTRAS, if given).
# Installs Debian's python3-venv first when the interpreter cannot make a virtualenv.
# Prints a few lines; pip's own output goes to .venv/install.log (shown when it fails).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
say() { echo "teleconsult setup: $*"; }

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null \
  || { echo "teleconsult needs Python 3.11 or newer (python3 is $(python3 --version 2>&1))" >&2; exit 1; }
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v cc >/dev/null || need_apt+=(gcc libc6-dev)  # the compiled send (media/native)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_apt[*]}"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv ($(python3 --version 2>&1))"
  python3 -m venv .venv
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
# only reinstall when pyproject.toml changed since the last install
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)-${extras:-base}"
if [ ! -f "$stamp" ]; then
  say "installing Python packages${extras:+ (with $extras)}: about 1.3 GB, several minutes the first time"
  log=.venv/install.log
  started=$(date +%s)
  if ! { .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip \
         && PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q --disable-pip-version-check \
              --no-warn-script-location -e "$spec"; } >"$log" 2>&1; then
    echo "teleconsult setup: pip failed; the end of $log:" >&2
    grep -v '^WARNING: Location' "$log" | tail -n 30 >&2
    exit 1
  fi
  .venv/bin/python -c 'import rtc_server, signaling' # fail loudly if the install did not work
  touch "$stamp"
  say "Python packages installed in $(( $(date +%s) - started )) s ($(du -sh .venv | cut -f1) in .venv; log: $log)"
fi

# the forwarding fast path's compiled send and REMB estimator (media/native/*.c; the server
# does the same work in Python without them, with a log line saying so)
so=media/native/libtcfastsend.so
if [ ! -f $so ] || [ media/native/fastsend.c -nt $so ] || [ media/native/remb.c -nt $so ]; then
  bash media/native/build.sh
fi
