"""Webhook worker, unit level: the retry delay (exponential, equal jitter, capped) and which
worker runs the training-side start-up work (not the light webhook worker)."""

from __future__ import annotations

from types import SimpleNamespace

from celery import Celery

from service.queue import celery_config
from service.settings import Settings
from worker.celery_app import trains
from worker.webhooks import backoff_s


def test_backoff_doubles_with_equal_jitter_and_a_cap():
    settings = Settings(webhook_backoff_s=10, webhook_backoff_max_s=60)
    for attempt, full in [(1, 10), (2, 20), (3, 40), (4, 60), (9, 60)]:
        delays = [backoff_s(attempt, settings) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > full / 4  # jittered, not fixed


def test_only_a_worker_consuming_the_training_queue_recovers_jobs():
    settings = Settings(broker_url="redis://127.0.0.1:6379/13")  # no broker folder made
    app = Celery("role-test")
    app.conf.update(celery_config(settings))
    consumer = SimpleNamespace(app=app)
    assert trains(consumer)  # no -Q: the default (training) queue
    app.amqp.queues.select([settings.webhook_queue])
    assert not trains(consumer)
    app.amqp.queues.select([settings.task_queue, settings.webhook_queue])
    assert trains(consumer)
