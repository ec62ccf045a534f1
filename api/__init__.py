"""HTTP API of the MMLoP service (FastAPI)."""
