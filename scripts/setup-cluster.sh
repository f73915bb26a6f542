#!/usr/bin/env bash
# Installs what the cluster backend's tests (crates/cluster) start on loopback:
#   - PostgreSQL server binaries from Debian's `postgresql` package (apt-get, when root and
#     /usr/lib/postgresql/*/bin/initdb is missing). The tests initdb their own cluster in a
#     temporary directory; any cluster the package starts on install is stopped and set to
#     manual start, so nothing is left running or enabled.
#   - an S3-compatible server: moto's server (`moto[server]`, pinned below, from PyPI) in
#     <repo>/.venv-cluster (its `bin/moto_server` is what crates/cluster/src/testkit.rs runs).
#
# Idempotent: a second run only checks. Optional for visage itself; without these the
# cluster tests skip (unless VISAGE_REQUIRE_CLUSTER=1).
#
# Environment:
#   PYTHON   interpreter to build the venv from (default: python3)
#   FORCE=1  reinstall moto even if the pinned version is already there
set -euo pipefail

MOTO_VERSION="5.2.5"

say() { echo "setup-cluster: $*"; }
warn() { echo "setup-cluster: warning: $*" >&2; }

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$root/.venv-cluster"

have_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

# 1. PostgreSQL (server binaries only; the tests run their own cluster).
if have_initdb; then
  say "PostgreSQL found: $(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  say "installing PostgreSQL (Debian package postgresql) for the cluster tests"
  if apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql; then
    # Debian's package creates (and may start) a `main` cluster; the tests do not use it.
    if command -v pg_lsclusters >/dev/null; then
      pg_lsclusters -h 2>/dev/null | while read -r ver name _port status _rest; do
        case "$status" in
          online*)
            say "stopping the package's cluster $ver/$name (the tests start their own)"
            pg_ctlcluster "$ver" "$name" stop || warn "could not stop cluster $ver/$name"
            ;;
        esac
        conf="/etc/postgresql/$ver/$name/start.conf"
        if [ -f "$conf" ] && [ "$(grep -v '^#' "$conf" | tr -d '[:space:]')" = auto ]; then
          echo manual >"$conf" && say "set $ver/$name to manual start ($conf)"
        fi
      done
    fi
    have_initdb && say "PostgreSQL installed: $(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)"
  else
    warn "installing postgresql failed; the PostgreSQL cluster tests will skip"
  fi
else
  echo "setup-cluster: note: PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb);" \
    "the cluster tests need them (e.g. sudo apt-get install postgresql). Continuing." >&2
fi

# 2. moto's S3-compatible server in .venv-cluster.
PYTHON="${PYTHON:-python3}"
moto_ok() {
  [ -x "$venv/bin/moto_server" ] &&
    [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" = "$MOTO_VERSION" ] &&
    "$venv/bin/python" -c 'import flask, flask_cors' >/dev/null 2>&1
}
if [ "${FORCE:-0}" != 1 ] && moto_ok; then
  say "moto[server]==$MOTO_VERSION already in $venv"
else
  if ! command -v "$PYTHON" >/dev/null; then
    warn "'$PYTHON' not found; the S3 cluster tests will skip"
    exit 0
  fi
  if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv with $PYTHON"
    "$PYTHON" -m venv "$venv" || { warn "'$PYTHON -m venv' failed; the S3 cluster tests will skip"; exit 0; }
  fi
  say "installing moto[server]==$MOTO_VERSION into $venv"
  if "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input \
    "moto[server]==$MOTO_VERSION" && moto_ok; then
    say "moto_server ready: $venv/bin/moto_server"
  else
    warn "installing moto[server]==$MOTO_VERSION failed; the S3 cluster tests will skip"
  fi
fi
