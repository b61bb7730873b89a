#!/usr/bin/env bash
# Build the compiled half of the forwarding fast path (media/native_send.py loads it).
# Needs a C compiler only (no Python headers). Prints one line; exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")"
cc="${CC:-cc}"
"$cc" -O2 -Wall -Wextra -Werror -std=c11 -fPIC -shared -o libtcfastsend.so.tmp fastsend.c -lpthread
mv libtcfastsend.so.tmp libtcfastsend.so
echo "teleconsult setup: native send built (media/native/libtcfastsend.so)"
