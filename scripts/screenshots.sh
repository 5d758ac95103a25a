#!/usr/bin/env bash
# Regenerates screenshots/*.svg from a real `leakhound demo` run: the dashboard draws every
# view of the live demo (and of its Python service, drilled into) into an off-screen buffer
# that is written as SVG. Needs python3 for the python-* pictures.
# Usage: scripts/screenshots.sh [SECONDS_BEFORE_SHOOTING]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
rm -f screenshots/*.svg
target/debug/leakhound demo --screenshots screenshots --after "${1:-22}s"
