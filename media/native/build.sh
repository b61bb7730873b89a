#!/usr/bin/env bash
# Build the compiled half of the forwarding fast path and the REMB estimator (fastsend.c,
# remb.c; media/native_send.py loads the library). Needs a C compiler only (no Python
# headers). No fused multiply-add (-ffp-contract=off): remb.c must round as Python's floats do.
# Prints one line; exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")"
cc="${CC:-cc}"
"$cc" -O2 -Wall -Wextra -Werror -std=c11 -ffp-contract=off -fPIC -shared \
  -o libtcfastsend.so.tmp fastsend.c remb.c -lpthread -lm
mv libtcfastsend.so.tmp libtcfastsend.so
echo "teleconsult setup: native send built (media/native/libtcfastsend.so)"
