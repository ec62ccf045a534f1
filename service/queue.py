"""Celery configuration shared by the worker and the API's enqueue helper.

The API never imports the worker's task body: it sends the task by name.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from celery import Celery

from service.jobs import TRAIN_TASK_NAME
from service.settings import Settings, get_settings

logger = logging.getLogger(__name__)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for ``settings``: late acks, prefetch 1, visibility timeout, queue."""
    transport_options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    broker_url = settings.broker_url
    conf: dict[str, Any] = {}
    if settings.broker_is_filesystem:
        folder = settings.broker_folder.resolve()
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        broker_url = "filesystem://"
        transport_options.update(
            data_folder_in=str(folder / "queue"),
            data_folder_out=str(folder / "queue"),
            processed_folder=str(folder / "processed"),
            control_folder=str(folder / "control"),
            store_processed=False,
        )
        # No fan-out needed in embedded mode; keep the folder transport simple.
        conf["worker_enable_remote_control"] = False
    conf.update(
        broker_url=broker_url,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        result_backend=None,
        task_ignore_result=True,
        task_default_queue=settings.task_queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
    )
    return conf


@functools.lru_cache
def producer_app() -> Celery:
    """A Celery app used only to send tasks (no task bodies registered)."""
    app = Celery("mmlop-producer")
    app.conf.update(celery_config(get_settings()))
    return app


def enqueue_training(job_id: str) -> None:
    """Send the training task for ``job_id`` (the task re-reads everything from the DB)."""
    from service.logs import job_context

    producer_app().send_task(TRAIN_TASK_NAME, args=[job_id], queue=get_settings().task_queue)
    with job_context(job_id):
        logger.info("enqueued %s for job %s", TRAIN_TASK_NAME, job_id)


def enqueue_webhook(event_id: str, attempt: int, countdown: float = 0.0) -> None:
    """Send delivery attempt ``attempt`` of webhook event ``event_id`` to the webhook queue,
    to run ``countdown`` seconds from now (``worker/webhooks.py``)."""
    from service.webhook_events import WEBHOOK_TASK_NAME

    producer_app().send_task(WEBHOOK_TASK_NAME, args=[event_id, attempt],
                             queue=get_settings().webhook_queue, countdown=countdown or None)


def queue_depth() -> int | None:
    """Messages waiting in the training queue, or None if the broker cannot be asked."""
    settings = get_settings()
    try:
        if settings.broker_is_filesystem:
            folder = Path(celery_config(settings)["broker_transport_options"]["data_folder_in"])
            suffix = f".{settings.task_queue}.msg"
            return sum(1 for p in folder.iterdir() if p.name.endswith(suffix))
        with producer_app().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            return conn.default_channel.client.llen(settings.task_queue) if hasattr(
                conn.default_channel, "client"
            ) else None
    except Exception:  # noqa: BLE001 - a metric must never break the caller
        logger.warning("could not read queue depth", exc_info=True)
        return None


def broker_reachable() -> bool:
    """True if the broker answers within a couple of seconds."""
    settings = get_settings()
    try:
        if settings.broker_is_filesystem:
            folder = Path(celery_config(settings)["broker_transport_options"]["data_folder_in"])
            return folder.is_dir()
        with producer_app().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            return True
    except Exception:  # noqa: BLE001
        logger.warning("broker unreachable", exc_info=True)
        return False
