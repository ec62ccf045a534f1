"""``python -m mmlop_client adapt DIR --wait`` / ``classify ID IMAGE...`` (``mmlop remote``)."""

from mmlop_client.cli import main

main()
