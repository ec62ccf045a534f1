#!/usr/bin/env bash
# Make sure what the test suite needs is present and answering (used by `make test`, `.ci/run`):
#   - PostgreSQL (local cluster via pg_ctlcluster) answering pg_isready,
#   - Redis on 127.0.0.1:6379 answering PING,
#   - Debian packages the tests call (docker-compose for the compose-file tests, chromium and
#     chromium-driver for the web console's browser test) or read (dataset-fashion-mnist for the
#     tiny backbone's evidence tests), installed with apt-get only when the command or file is
#     absent.
# Idempotent: services already running are left alone. Exits non-zero if a service cannot be
# brought up within MMLOP_SERVICE_WAIT seconds (default 60).
set -euo pipefail

wait_s="${MMLOP_SERVICE_WAIT:-60}"
log() { printf '[ci_services] %s\n' "$*" >&2; }

as_root() {
    if [[ "$(id -u)" == 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else "$@"; fi
}

wait_for() {  # wait_for NAME CMD...
    local name="$1" deadline=$((SECONDS + wait_s))
    shift
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "$name did not answer within ${wait_s}s"
            return 1
        fi
        sleep 1
    done
    log "$name is up"
}

# --- Debian packages -----------------------------------------------------------------------------
missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
# headless browser + WebDriver for tests/ui (selenium comes from pyproject.toml's dev extra)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v pg_isready >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
# Fashion-MNIST photos: the tiny backbone's evidence tests read the test split
[[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]] || missing+=(dataset-fashion-mnist)
if ((${#missing[@]})); then
    log "installing missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y --no-install-recommends "${missing[@]}" ||
        { as_root apt-get update && as_root apt-get install -y --no-install-recommends "${missing[@]}"; }
fi

# --- PostgreSQL ----------------------------------------------------------------------------------
if pg_isready -q; then
    log "PostgreSQL already running"
else
    log "starting PostgreSQL"
    for version in $(ls /etc/postgresql); do
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    wait_for PostgreSQL pg_isready -q
fi

# --- Redis ---------------------------------------------------------------------------------------
if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    log "Redis already running"
else
    log "starting Redis"
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for Redis bash -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
fi
