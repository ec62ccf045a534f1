"""Celery worker: thin training tasks over ``mmlop_core``."""
