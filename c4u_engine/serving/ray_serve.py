"""Scale-out on Ray Serve: each replica is one Engine behind the same HTTP API (FastAPI ingress).

    c4u serve --ray --replicas 2 [--model DIR]                   # a local Ray instance, or --address of a cluster
    serve run c4u_engine.serving.ray_serve:app_builder model=DIR num_replicas=2

Ray Serve's proxy spreads requests over the replicas; each replica's scheduler batches what reaches it. On a cluster,
start Ray on every machine (`ray start --head` on one, `ray start --address HEAD:6379` on the others) and point
`c4u serve --ray --address HEAD:6379` (or `serve run --address ...`) at it; replicas land wherever Ray has room.

A local Ray instance (no --address) listens on 127.0.0.1 only: its node address is the loopback
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, Ray's own switch for single-machine use: GCS, raylet, workers, the dashboard
agent and the object manager then bind 127.0.0.1) and the dashboard is off. `--ray-listen-all` opens it to the
network as a plain `ray.init()` would (Ray has no authentication: only on a network you trust).
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
        import os

        if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":  # a local instance (keep_ray_local)
            bind_replica_grpc_to_loopback()
        from c4u_engine.api import Engine
        from c4u_engine.builtin import builtin_model_dir
        from c4u_engine.serving.app import create_app

        engine = Engine(model or builtin_model_dir(), device=device, backend=backend, precision=precision,
                        **settings)
        from c4u_engine.serving.server import loaded_text

        print(f"c4u replica: {loaded_text(engine)}", flush=True)
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


def bind_replica_grpc_to_loopback() -> None:
    """Ray Serve starts each replica's inter-deployment gRPC server on [::]:0 (every interface) whatever the node's
    address; on a local instance this binds it to 127.0.0.1 instead. Runs in the replica before Serve starts that
    server; a Ray without the hook is left as it is (tests/serving/test_ray_local.py would say so)."""
    try:
        from ray.serve._private import replica
    except ImportError:
        return
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "c4u_loopback", False):
        return

    def loopback(server, address: str):
        host, _, port = address.rpartition(":")
        return original(server, f"127.0.0.1:{port}" if host in ("[::]", "0.0.0.0", "") else address)

    loopback.c4u_loopback = True
    replica.add_port_to_grpc_server = loopback


def settings_text(settings: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((settings or {}).items())) or "default engine settings"


def app_builder(args: dict[str, str]):
    """For `serve run c4u_engine.serving.ray_serve:app_builder model=DIR num_replicas=N`."""
    return build_app(args.get("model"), num_replicas=int(args.get("num_replicas", 1)),
                     backend=args.get("backend", "auto"), device=args.get("device", "cpu"),
                     precision=args.get("precision"))


LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # node address = 127.0.0.1 (read when ray is imported)


def keep_ray_local() -> None:
    """Make the Ray instance this process starts listen on the loopback only. Must run before `import ray`: Ray
    reads the switch once, on import (a process that imported it already cannot be made local this way)."""
    import os
    import sys

    if "ray" in sys.modules and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
        from c4u_engine.errors import BackendUnavailableError

        raise BackendUnavailableError("ray was imported before c4u could keep it on 127.0.0.1: start the process "
                                      "with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, or pass listen_all=True")
    os.environ.update(LOOPBACK_ENV)


def run(model: str | None, *, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
        address: str | None = None, api_key: str | None = None, engine_settings: dict[str, Any] | None = None,
        backend: str = "auto", device: str = "cpu", precision: str | None = None, listen_all: bool = False) -> int:
    """Start (or join, with `address`) Ray, deploy, and block until SIGTERM/SIGINT; then shut Serve down. Returns 0.
    A Ray instance started here listens on 127.0.0.1 only unless listen_all."""
    import os
    import signal
    import threading

    if address is None and not listen_all:
        keep_ray_local()
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
    where = ("Ray cluster " + address) if address else ("a local Ray instance on " +
                                                          ("every interface" if listen_all else "127.0.0.1 only"))
    print(f"c4u serving on http://{host}:{port} with {replicas} Ray Serve replica(s) on {where}; model "
          f"{model or 'built-in'}, backend {backend}, precision {precision or 'the checkpoint dtype'}, "
          f"{settings_text(engine_settings)} (each replica logs what it loaded)", flush=True)
    stop.wait()
    serve.shutdown()
    ray.shutdown()
    return 0
