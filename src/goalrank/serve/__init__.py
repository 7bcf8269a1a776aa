"""Serving a trained ranker: HTTP service (app.py), raw-id translation and cold start (catalog.py),
micro-batching (batcher.py), what one client may hold (limits.py), inference paths (export.py) and
the latency benchmark (bench.py).

Modules are imported by path, not re-exported here, so that importing another stage never loads
fastapi or uvicorn.
"""
