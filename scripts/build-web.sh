#!/usr/bin/env bash
# Build the browser app bundle (web_client/static/dist/app.js) with esbuild.
# Dependencies come from the committed package-lock.json (`npm ci`), dev tools included (esbuild,
# and eslint for scripts/test's `npm run lint`); nothing is fetched at run time by the server or
# the browser. Installs Debian's nodejs/npm first when missing.
# Re-runs npm ci only when the lockfile changed, and esbuild only when a source changed.
set -euo pipefail
cd "$(dirname "$0")/../web_client"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing: nodejs npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
fi

stamp="node_modules/.installed-$(sha1sum package-lock.json | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "teleconsult setup: installing the browser app's npm packages (from package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  touch "$stamp"
fi

bundle="static/dist/app.js"
if [ ! -f "$bundle" ] || [ -n "$(find src build.mjs package-lock.json -newer "$bundle" -print -quit)" ]; then
  echo "teleconsult setup: building the browser app (esbuild)"
  if ! out=$(node build.mjs 2>&1); then
    echo "$out" >&2
    exit 1
  fi
fi

# patients on poor links: the server sends app.js.gz to browsers that accept gzip (aiohttp's
# FileResponse picks a precompressed sibling), about a quarter of the bytes
if [ ! -f "$bundle.gz" ] || [ "$bundle" -nt "$bundle.gz" ]; then
  gzip -9 -k -f "$bundle"
fi
