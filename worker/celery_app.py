"""Celery application: ``celery -A worker.celery_app worker``.

Configured from the shared settings (``service.queue.celery_config``): late acks, requeue on a
lost worker, prefetch 1, broker visibility timeout above the longest allowed job.
"""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import setup_logging, worker_process_init, worker_ready

from service.queue import celery_config
from service.settings import get_settings

logger = logging.getLogger(__name__)

app = Celery("mmlop", include=["worker.tasks", "worker.webhooks"])
app.conf.update(celery_config(get_settings()))


@setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, **_kwargs: object) -> None:
    """The service's one log format (``service.logs``) instead of Celery's own.

    Connecting this signal keeps Celery from configuring logging itself; ``--loglevel`` wins
    over ``MMLOP_LOG_LEVEL`` when given.
    """
    from service.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_format, loglevel or settings.log_level)


@worker_process_init.connect
def _after_fork(**_kwargs: object) -> None:
    """In each pool process: fresh DB connections and torch thread count.

    The backbone itself is loaded lazily by the first task (``worker.tasks.get_backbone``), since
    loading may take longer than Celery allows for process start-up.
    """
    from service.db import reset_engine_after_fork

    reset_engine_after_fork()
    threads = get_settings().torch_threads
    if threads:
        import torch

        torch.set_num_threads(threads)


def trains(consumer: object) -> bool:
    """Whether the worker of ``consumer`` consumes the training queue (the light webhook worker,
    ``-Q <webhook_queue>``, does not: it recovers no jobs and runs no reconciler)."""
    queues = getattr(getattr(getattr(consumer, "app", None), "amqp", None), "queues", None)
    consumed = getattr(queues, "consume_from", None)
    return not consumed or get_settings().task_queue in consumed


@worker_ready.connect
def _recover_orphans(sender: object = None, **_kwargs: object) -> None:
    """Re-enqueue jobs left ``running`` by a dead worker process on this host.

    The embedded filesystem broker has no redelivery, and Redis redelivers only after the
    visibility timeout; a job whose recorded ``host:pid`` is no longer alive is re-sent now.
    A duplicate message later is harmless (succeeded jobs ignore deliveries; a newer claim
    fences out an older one).
    """
    from worker.tasks import recover_orphaned_jobs

    if not trains(sender):
        return
    try:
        recover_orphaned_jobs()
    except Exception:  # noqa: BLE001 - never keep the worker from starting
        logger.exception("orphaned-job recovery failed")


@worker_ready.connect
def _start_reconciler(sender: object = None, **_kwargs: object) -> None:
    """Start the periodic reconciler thread in the worker's main process (issue 5)."""
    from worker.reconciler import start_background

    if not trains(sender):
        return
    try:
        start_background()
    except Exception:  # noqa: BLE001 - never keep the worker from starting
        logger.exception("could not start the reconciler")
