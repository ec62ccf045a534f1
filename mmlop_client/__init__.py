"""Python client of the MMLoP adaptation service (httpx; no torch, no service imports).

    from mmlop_client import Client
    with Client("http://127.0.0.1:8000", api_key) as c:
        job = c.wait(c.create_adaptation("photos/").id)          # tqdm bar on a terminal
        print(c.classify(job.id, ["shoe.jpg"]).results[0].top)

``keys()``, ``create_key()``, ``revoke_key()`` and ``rotate_key()`` manage the tenant's API
keys; ``webhook_secret()``, ``rotate_webhook_secret()``, ``deliveries(id)`` and ``redeliver()``
its webhooks (``create_adaptation(..., callback_url=...)``). ``AsyncClient`` has the same calls
as coroutines. Every error answer raises ``MMLoPAPIError``
(``.status``, ``.kind``, ``.field``, ``.detail``).
"""

from .client import AsyncClient, Client
from .errors import (MMLoPAPIError, MMLoPClientError, MMLoPConnectionError, MMLoPInputError,
                     MMLoPJobError, MMLoPTimeoutError)
from .keys import ApiKey, NewApiKey
from .models import (TERMINAL_STATUSES, Adaptation, AdaptationEvent, AdaptationList,
                     ClassifyResult, ImageResult, Prediction, Progress)
from .webhooks import DeliveryAttempt, WebhookSecret

__all__ = [
    "Adaptation", "AdaptationEvent", "AdaptationList", "ApiKey", "AsyncClient", "ClassifyResult", "Client",
    "DeliveryAttempt", "ImageResult",
    "MMLoPAPIError", "MMLoPClientError", "MMLoPConnectionError", "MMLoPInputError",
    "MMLoPJobError", "MMLoPTimeoutError", "NewApiKey", "Prediction", "Progress", "TERMINAL_STATUSES",
    "WebhookSecret",
]
