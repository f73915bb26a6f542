#!/usr/bin/env bash
# Creates (or refreshes) the Python reference environment in <repo>/.venv: CPython 3.11 with
# the exact, hash-pinned packages of scripts/requirements-ref.txt (onnxruntime, numpy,
# opencv-python-headless and their dependencies). Used by scripts/reference/*.py and
# bench/speed_python.py.
#
# Idempotent: a second run with an unchanged requirements file only checks the environment.
#
# Environment:
#   PYTHON   interpreter to build the venv from (default: python3.11 if on PATH, else python3)
#   FORCE=1  reinstall even if the environment looks up to date
set -euo pipefail

die() { echo "setup-python: error: $*" >&2; exit 1; }
say() { echo "setup-python: $*"; }

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$root/.venv"
req="$here/requirements-ref.txt"
stamp="$venv/.requirements-ref.sha256"

[ -f "$req" ] || die "missing $req"

if [ -z "${PYTHON:-}" ]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "interpreter '$PYTHON' not found; install CPython 3.11 or set PYTHON=/path/to/python3.11"

pyver() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo "?"; }

want="3.11"
got="$(pyver "$PYTHON")"
[ "$got" = "$want" ] || die "'$PYTHON' is Python $got; the pinned wheels are for CPython $want (set PYTHON=/path/to/python3.11)"
case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) die "the pinned wheels are for Linux x86_64, this is $(uname -s)-$(uname -m)" ;;
esac

req_sum="$(sha256sum "$req" | cut -d' ' -f1)"

# 1. The virtual environment.
if [ -x "$venv/bin/python" ]; then
    vgot="$(pyver "$venv/bin/python")"
    [ "$vgot" = "$want" ] || die "$venv exists but is Python $vgot (want $want); remove it (rm -rf '$venv') and run again"
    say "using existing venv $venv (Python $vgot)"
else
    [ -e "$venv" ] && die "$venv exists but has no working bin/python; remove it (rm -rf '$venv') and run again"
    say "creating venv $venv with $PYTHON ($got)"
    "$PYTHON" -m venv "$venv" || die "'$PYTHON -m venv' failed (on Debian/Ubuntu install the python3.11-venv package)"
fi
vpy="$venv/bin/python"

check_imports() {
    "$vpy" -c 'import numpy, onnxruntime, cv2' >/dev/null 2>&1
}

# 2. The packages.
if [ "${FORCE:-0}" != "1" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$req_sum" ] && check_imports; then
    say "packages already installed from requirements-ref.txt (sha256 ${req_sum:0:16}...); nothing to do (FORCE=1 reinstalls)"
else
    say "installing hash-pinned packages from $req"
    rm -f "$stamp"
    "$vpy" -m pip install --disable-pip-version-check --no-input \
        --require-hashes --only-binary=:all: -r "$req" \
        || die "pip install --require-hashes failed (network, a changed wheel, or a non-3.11/x86_64 interpreter?)"
    check_imports || die "packages installed but 'import numpy, onnxruntime, cv2' fails in $venv"
    echo "$req_sum" >"$stamp"
fi

"$vpy" -m pip check --disable-pip-version-check >/dev/null 2>&1 || say "warning: 'pip check' reports inconsistent dependencies in $venv"

# 3. Report.
"$vpy" - <<'EOF'
import numpy, onnxruntime, cv2, sys
print("setup-python: python %s" % sys.version.split()[0])
print("setup-python: numpy %s, onnxruntime %s (%s), opencv %s"
      % (numpy.__version__, onnxruntime.__version__,
         ",".join(onnxruntime.get_available_providers()), cv2.__version__))
EOF
say "ready: $vpy"
