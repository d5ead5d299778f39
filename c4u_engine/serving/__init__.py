"""Serving: the HTTP API (app.py, FastAPI), `c4u serve` on uvicorn (server.py), Ray Serve replicas (ray_serve.py),
the wire forms and error statuses (schema.py, framework-free, shared with the CLI) and Prometheus metrics.

Needs the serve extra (pip install 'c4u_engine[serve]'); Ray Serve needs the ray extra. Nothing here is imported
by the core package.
"""
