#!/usr/bin/env bash
# The test command: every test of the workspace, in the release profile that setup built
# (dependencies are compiled once). Tests that need ../shared/data or installed packs skip
# with a message when those are absent, unless VISAGE_REQUIRE_MODELS=1 (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo nextest run --release --locked --workspace --no-fail-fast "$@"
