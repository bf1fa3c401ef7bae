#!/usr/bin/env bash
# Everything the test suite needs, idempotent: the venv with the package, its test extras and
# the `ray` extra (tests/cluster), Debian's chromium for the browser tests, and a real
# llama.cpp server with a small model.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*"; }

[ -x .venv/bin/python ] || { step "creating .venv"; python3 -m venv .venv; }
step "installing llamaswap with its test extras and Ray Serve (tests/cluster)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,ray]"

if [ ! -x /usr/bin/chromium ]; then
  step "installing Debian's chromium for the UI tests"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi

# A first install on a machine builds llama.cpp from source (~20 min on 2 cores); pip's
# wheel cache makes later ones take seconds.
bash scripts/llamacpp-setup.sh
