"""Scale-out on Ray Serve: each replica is one Engine behind the same HTTP API (FastAPI ingress).

    c4u serve --ray --replicas 2 [--model DIR]                   # a local Ray instance, or --address of a cluster
    serve run c4u_engine.serving.ray_serve:app_builder model=DIR num_replicas=2

Ray Serve's proxy spreads requests over the replicas; each replica's scheduler batches what reaches it. On a cluster,
start Ray on every machine (`ray start --head` on one, `ray start --address HEAD:6379` on the others) and point
`c4u serve --ray --address HEAD:6379` (or `serve run --address ...`) at it; replicas land wherever Ray has room.
"""

from __future__ import annotations

from typing import Any


def build_app(model: str | None = None, *, num_replicas: int | None = 1, autoscaling_config: dict | None = None,
              api_key: str | None = None, engine_settings: dict[str, Any] | None = None,
              backend: str = "auto", device: str = "cpu", precision: str | None = None, num_cpus: float = 1.0,
              max_ongoing_requests: int = 64):
    """A Ray Serve application: `num_replicas` replicas (or an autoscaling config), each one Engine."""
    from ray import serve

    settings = dict(engine_settings or {})
    # One scheduler per replica on its num_cpus threads: Ray scales out by replicas, and a replica does not see
    # which of the machine's cores are its own (engine lanes would count them all).
    settings.setdefault("lanes", 1)

    def asgi_app():  # evaluated on each replica
        from c4u_engine.api import Engine
        from c4u_engine.builtin import builtin_model_dir
        from c4u_engine.serving.app import create_app

        engine = Engine(model or builtin_model_dir(), device=device, backend=backend, precision=precision,
                        **settings)
        return create_app(engine, api_key=api_key, close_engine=True)

    # Each replica's runtime uses as many threads as the CPUs Ray gives it (replicas on one machine must not
    # oversubscribe it), and takes many requests at once: its engine batches them (Ray's default is 5).
    threads = str(max(1, int(num_cpus)))
    options: dict[str, Any] = {
        "name": "c4u", "max_ongoing_requests": max_ongoing_requests,
        "ray_actor_options": {"num_cpus": num_cpus,
                              "runtime_env": {"env_vars": {"C4U_ORT_THREADS": threads, "OMP_NUM_THREADS": threads}}},
    }
    if autoscaling_config is not None:
        options["autoscaling_config"] = autoscaling_config
    else:
        options["num_replicas"] = num_replicas
    deployment = serve.deployment(**options)(serve.ingress(asgi_app)())
    return deployment.bind()


def app_builder(args: dict[str, str]):
    """For `serve run c4u_engine.serving.ray_serve:app_builder model=DIR num_replicas=N`."""
    return build_app(args.get("model"), num_replicas=int(args.get("num_replicas", 1)),
                     backend=args.get("backend", "auto"), device=args.get("device", "cpu"),
                     precision=args.get("precision"))


def run(model: str | None, *, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
        address: str | None = None, api_key: str | None = None, engine_settings: dict[str, Any] | None = None,
        backend: str = "auto", device: str = "cpu", precision: str | None = None) -> int:
    """Start (or join) Ray, deploy, and block until SIGTERM/SIGINT; then shut Serve down. Returns 0."""
    import os
    import signal
    import threading

    import ray
    from ray import serve

    ray.init(address=address, include_dashboard=False, ignore_reinit_error=True)
    serve.start(http_options={"host": host, "port": port})
    cpus = max(1, (os.cpu_count() or 1) // replicas)  # this machine's CPUs shared by its replicas
    serve.run(build_app(model, num_replicas=replicas, api_key=api_key, engine_settings=engine_settings,
                        backend=backend, device=device, precision=precision, num_cpus=cpus), name="c4u",
              route_prefix="/")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"c4u serving on http://{host}:{port} with {replicas} Ray Serve replica(s)", flush=True)
    stop.wait()
    serve.shutdown()
    ray.shutdown()
    return 0
