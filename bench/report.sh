#!/usr/bin/env bash
# The benchmark report in one command: builds visage (release), makes sure the Python reference
# environment (.venv, scripts/setup-python.sh) and the peers' environment (bench-out/peers-venv:
# faiss-cpu, face_recognition on dlib-bin, matplotlib; pinned by version and sha256 in
# bench/requirements-peers*.txt, from PyPI) exist, then runs every benchmark with the peers side
# by side (bench/report.py) and writes report.md, report.json and plots/*.png.
#
#   bench/report.sh [--quick] [--skip-1m] [--out DIR] [--resume] [--skip STAGES] ...
#   bench/report.sh --help       # every option and stage (bench/report.py)
#
# Environment: VISAGE_HOME (model packs; default ~/.local/share/visage), NO_BUILD=1 (use the
# existing target/release/visage), PYTHON (interpreter for the peers' venv, CPython 3.11).
# The full run takes about 45 minutes on the idle 2-core machine (38.7 min of stages measured on
# 2026-11-22 with a pre-filled probe gallery); --quick about 6.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
say() { echo "report.sh: $*" >&2; }

for arg in "$@"; do
  if [ "$arg" = -h ] || [ "$arg" = --help ]; then
    sed -n '2,14p' "$0"
    [ -x bench-out/peers-venv/bin/python ] && exec bench-out/peers-venv/bin/python bench/report.py --help
    exit 0
  fi
done

if [ "${NO_BUILD:-0}" != 1 ]; then
  say "building visage (release)"
  cargo build --release -p visage-cli >&2
fi
[ -x target/release/visage ] || { say "target/release/visage missing"; exit 1; }

# The Python onnxruntime peer (bench/ingest_python.py) runs in the reference environment.
if ! .venv/bin/python -c 'import numpy, onnxruntime, cv2' 2>/dev/null; then
  say "creating the Python reference environment (.venv)"
  scripts/setup-python.sh >&2
fi

# The peers' environment, reinstalled when the pinned requirements change.
venv=bench-out/peers-venv
stamp="$venv/.requirements-peers.sha256"
want="$(cat bench/requirements-peers.txt bench/requirements-peers-nodeps.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] \
   || ! "$venv/bin/python" -W ignore -c 'import faiss, face_recognition, matplotlib' 2>/dev/null; then
  py="${PYTHON:-}"
  if [ -z "$py" ]; then
    if command -v python3.11 >/dev/null; then py=python3.11; else py=python3; fi
  fi
  [ -x "$venv/bin/python" ] || { say "creating $venv with $py"; mkdir -p bench-out; "$py" -m venv "$venv"; }
  rm -f "$stamp"
  say "installing the pinned peers into $venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
      --require-hashes --only-binary=:all: -r bench/requirements-peers.txt >&2
  # face-recognition declares `dlib` (a long C++ build from source); dlib-bin above provides it.
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
      --require-hashes --no-deps --no-build-isolation -r bench/requirements-peers-nodeps.txt >&2
  "$venv/bin/python" -W ignore -c 'import faiss, face_recognition, matplotlib' \
      || { say "the peers do not import in $venv"; exit 1; }
  echo "$want" >"$stamp"
fi

setup_s=$(( $(date +%s) - t0 ))
cmd="bench/report.sh"
for arg in "$@"; do cmd+=" $(printf '%q' "$arg")"; done
exec "$venv/bin/python" bench/report.py --setup-s "$setup_s" --command "$cmd" "$@"
