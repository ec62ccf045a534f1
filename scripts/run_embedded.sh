#!/usr/bin/env bash
# Run the whole service on one machine with no external servers (README Quickstart, `make run`):
#   1. `alembic upgrade head` on the embedded default database (SQLite under ./var unless
#      MMLOP_DATABASE_URL says otherwise),
#   2. the API:    uvicorn api.main:app on $MMLOP_HOST:$MMLOP_PORT (default 127.0.0.1:8000),
#   3. the worker: celery -A worker.celery_app worker --concurrency 1 -Q <queue>, using the
#      server-less kombu broker (filesystem://./var/broker) that service/settings.py defaults to;
#      <queue> is Settings.task_queue (MMLOP_TASK_QUEUE), the queue the API sends jobs to,
#   4. the webhook worker: celery ... worker --pool threads --concurrency 4 -Q <webhook queue>
#      (Settings.webhook_queue, MMLOP_WEBHOOK_QUEUE): webhook deliveries and their retries, apart
#      from training so that a long job never holds them up (docs/SERVICE.md "Webhooks").
# Ctrl-C (SIGINT) or SIGTERM stops them all: each child runs in its own process group, so only this
# supervisor receives the terminal's SIGINT; it sends SIGTERM to the main processes (celery: warm
# shutdown, uvicorn: graceful), waits up to MMLOP_STOP_TIMEOUT seconds (default 20), then SIGKILLs
# every process group (which also catches celery's pool process), so nothing is left behind.
# If any child dies on its own, the others are stopped too and the exit status is non-zero.
#
# Environment (all optional):
#   PYTHON              interpreter with the project installed (default: <repo>/.venv/bin/python)
#   MMLOP_HOST          API bind address (default 127.0.0.1)
#   MMLOP_PORT          API port (default 8000)
#   MMLOP_LOG_LEVEL     uvicorn/celery log level (default info)
#   MMLOP_STOP_TIMEOUT  seconds to wait for a graceful stop before SIGKILL (default 20)
#   MMLOP_*             read by service/settings.py (backbone, device, database, broker, ...)
set -euo pipefail
set -m  # job control: every background child gets its own process group

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

py="${PYTHON:-$repo_root/.venv/bin/python}"
host="${MMLOP_HOST:-127.0.0.1}"
port="${MMLOP_PORT:-8000}"
log_level="${MMLOP_LOG_LEVEL:-info}"
stop_timeout="${MMLOP_STOP_TIMEOUT:-20}"

log() {  # one line; a JSON object when MMLOP_LOG_FORMAT=json, like the API's and worker's lines
    if [[ "${MMLOP_LOG_FORMAT:-text}" == json ]]; then
        local msg=${*//\\/\\\\}
        msg=${msg//\"/\\\"}
        printf '{"time": "%s", "level": "INFO", "logger": "run_embedded", "message": "%s"}\n' \
            "$(date -u +%Y-%m-%dT%H:%M:%S)" "$msg" >&2
    else
        printf '[run_embedded] %s\n' "$*" >&2
    fi
}

if [[ ! -x "$py" ]]; then
    log "no Python at $py; run 'make venv' first or set PYTHON"
    exit 2
fi
for path in api/main.py worker/celery_app.py alembic.ini; do
    if [[ ! -e "$path" ]]; then
        log "missing $repo_root/$path; the service is not in this checkout yet"
        exit 2
    fi
done

# The embedded defaults live under ./var (SQLite db, blobs, broker spool); make sure it exists.
mkdir -p var

# The worker must consume the queue the API enqueues to; ask the shared settings object.
queue="$("$py" -c 'from service.settings import get_settings; print(get_settings().task_queue)')"
webhook_queue="$("$py" -c 'from service.settings import get_settings; print(get_settings().webhook_queue)')"

log "migrating database: alembic upgrade head"
"$py" -m alembic upgrade head

pids=()
names=()
stopping=0

alive() { kill -0 "$1" 2>/dev/null; }

signal_groups() {  # signal_groups SIG: every process of every child's process group
    local pid
    for pid in "${pids[@]}"; do
        kill "-$1" -- "-$pid" 2>/dev/null || true
    done
}

mains_alive() {
    local pid
    for pid in "${pids[@]}"; do
        if alive "$pid"; then return 0; fi
    done
    return 1
}

groups_alive() {  # any non-zombie process left in the children's process groups?
    local pid
    if command -v ps >/dev/null; then
        # (An explicit status: a bare `return` inside a trap handler returns the status of the
        # command that ran before the trap.)
        if ps -A -o pgid=,stat= | awk -v groups=" ${pids[*]} " \
            'index(groups, " " $1 " ") && $2 !~ /^Z/ { found = 1 } END { exit !found }'; then
            return 0
        fi
        return 1
    fi
    for pid in "${pids[@]}"; do
        if kill -0 -- "-$pid" 2>/dev/null; then return 0; fi
    done
    return 1
}

shutdown() {
    local status="${1:-0}" pid ticks
    trap - EXIT
    if [[ "$stopping" == 1 ]]; then
        return
    fi
    stopping=1
    # A second Ctrl-C while waiting: stop waiting, kill everything now.
    # A TERM/HUP during the graceful stop is usually the same stop relayed (make passes the group's
    # SIGTERM on), so only a second Ctrl-C escalates; MMLOP_STOP_TIMEOUT bounds the wait anyway.
    trap 'log "second signal: killing everything"; signal_groups KILL' INT
    trap 'log "stop already under way (graceful, at most ${stop_timeout}s)"' TERM HUP
    if ((${#pids[@]})); then
        # SIGTERM to the main processes only: celery then does a warm shutdown (its pool child
        # finishes or requeues the running task), uvicorn drains its connections.
        log "stopping ${names[*]} (SIGTERM)"
        for pid in "${pids[@]}"; do
            kill -TERM "$pid" 2>/dev/null || true
        done
        ticks=$((stop_timeout * 5))
        while mains_alive && ((ticks-- > 0)); do
            sleep 0.2
        done
        if mains_alive; then
            log "still running after ${stop_timeout}s; sending SIGKILL"
            signal_groups KILL
        fi
        # Whatever a child left behind in its process group (pool processes, helpers).
        ticks=10
        while groups_alive && ((ticks-- > 0)); do
            sleep 0.2
        done
        if groups_alive; then
            log "killing leftover processes"
            signal_groups KILL
        fi
        wait 2>/dev/null || true
        log "stopped"
    fi
    exit "$status"
}

trap 'shutdown 130' INT
trap 'shutdown 143' TERM
trap 'shutdown 129' HUP
trap 'shutdown $?' EXIT

log "starting API on http://$host:$port"
"$py" -m uvicorn api.main:app --host "$host" --port "$port" --log-level "$log_level" </dev/null &
pids+=("$!")
names+=("api")

log "starting worker (concurrency 1, queue $queue)"
quiet=()  # celery's start-up banner is plain text: left out when the logs are JSON
[[ "${MMLOP_LOG_FORMAT:-text}" == json ]] && quiet=(--quiet)
"$py" -m celery -A worker.celery_app worker --concurrency 1 -Q "$queue" \
    --loglevel "$log_level" --hostname "embedded@%h" "${quiet[@]}" </dev/null &
pids+=("$!")
names+=("worker")

log "starting webhook worker (threads, queue $webhook_queue)"
"$py" -m celery -A worker.celery_app worker --pool threads --concurrency 4 -Q "$webhook_queue" \
    --loglevel "$log_level" --hostname "webhooks@%h" "${quiet[@]}" </dev/null &
pids+=("$!")
names+=("webhooks")

set +m  # children keep their own process groups; no job-status chatter from here on

# Block until any child exits (or a signal runs the trap).
status=0
wait -n "${pids[@]}" || status=$?
for i in "${!pids[@]}"; do
    if ! alive "${pids[$i]}"; then
        log "${names[$i]} exited (status $status); stopping the rest"
    fi
done
shutdown "$((status == 0 ? 1 : status))"
