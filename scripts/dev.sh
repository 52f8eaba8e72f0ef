#!/usr/bin/env bash
# One entry point for a fresh machine (Python 3.11, pip, gcc; network: package registries).
#
#   bash scripts/dev.sh serve [serve options]   set up, fetch the default model, start the server
#   bash scripts/dev.sh test  [pytest options]  set up, fetch all test models, run the whole suite
#
# "Set up" = a virtual environment in .venv (or $VENV) with the package installed the normal
# way, so the inference core is compiled with mypyc.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}

case "${1:-}" in
serve)
    shift
    setup .
    "$VENV/bin/assistant" pull
    exec "$VENV/bin/assistant" serve "$@"
    ;;
test)
    shift
    # Debian's chromium for the browser tests (never a downloaded browser build).
    if ! command -v chromium >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
    fi
    setup ".[test]"
    setup ./examples/assistant-hello-plugin
    "$VENV/bin/assistant" --version
    "$VENV/bin/assistant" pull --all
    # Models, chromium and the example plugin are set up now: a test that finds one missing
    # fails here instead of skipping (as it does under a bare `pytest`).
    export ASSISTANT_DEV_SETUP=1
    # The installed (compiled) package is what the tests import: run pytest from the
    # venv, not `python -m pytest` (which would put the source tree first on sys.path).
    exec "$VENV/bin/pytest" "$@"
    ;;
*)
    echo "usage: bash scripts/dev.sh serve|test [options]" >&2
    exit 2
    ;;
esac
