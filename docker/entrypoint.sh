#!/bin/sh
# Container entrypoint: resolve the shortcuts `api`, `worker`, `webhooks`, `migrate`, make sure the blob and
# cache folders exist, then exec the command (PID 1 is the service process itself, so SIGTERM
# from `docker stop` reaches uvicorn/celery directly; compose adds `init: true` for reaping).
set -eu

case "${1:-}" in
    api)
        shift
        set -- uvicorn api.main:app --host 0.0.0.0 --port "${MMLOP_PORT:-8000}" "$@"
        ;;
    worker)
        shift
        # One worker process per GPU: --concurrency 1.
        set -- celery -A worker.celery_app worker --concurrency 1 \
            -Q "${MMLOP_TASK_QUEUE:-mmlop}" --loglevel INFO "$@"
        # celery's start-up banner is plain text: left out when the logs are JSON
        [ "${MMLOP_LOG_FORMAT:-text}" = json ] && set -- "$@" --quiet
        ;;
    webhooks)
        shift
        # Webhook deliveries (docs/SERVICE.md "Webhooks"): light, no GPU, a pool of threads.
        set -- celery -A worker.celery_app worker --pool threads --concurrency 8 \
            -Q "${MMLOP_WEBHOOK_QUEUE:-mmlop-webhooks}" --loglevel INFO "$@"
        [ "${MMLOP_LOG_FORMAT:-text}" = json ] && set -- "$@" --quiet
        ;;
    migrate)
        shift
        set -- alembic upgrade head "$@"
        ;;
esac

for dir in "${MMLOP_BLOB_ROOT:-}" "${MMLOP_CACHE_DIR:-}" "${HF_HOME:-}"; do
    if [ -n "$dir" ]; then
        mkdir -p "$dir" 2>/dev/null || echo "entrypoint: cannot create $dir (volume permissions?)" >&2
    fi
done

exec "$@"
