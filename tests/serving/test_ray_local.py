"""`c4u serve --ray` on a local Ray instance: no process of its tree listens anywhere but on the loopback."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from http_server import free_port


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def process_tree(root: int) -> set[int]:
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo += _children(pid)
    return seen


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:  # the process ended meanwhile
        pass
    return inodes


def _address(hex_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_ip)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])  # /proc/net/tcp: little-endian 32-bit words
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
    address = ipaddress.IPv6Address(b"".join(words))
    return address.ipv4_mapped or address


def listening_sockets(pids: set[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket in LISTEN state held by one of `pids` (from /proc/net/tcp{,6})."""
    by_inode = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in by_inode:  # 0A: TCP_LISTEN
                ip, port = local.split(":")
                found.append((str(_address(ip)), int(port, 16), by_inode[inode]))
    return found


@pytest.mark.ray
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the listening sockets from Linux's /proc")
def test_c4u_serve_ray_listens_on_the_loopback_only(tiny_ckpt, tmp_path):
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.Popen([sys.executable, "-m", "c4u_engine.cli", "serve", "--ray", "--model", str(tiny_ckpt),
                             "--backend", "torch", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**env, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        tree = process_tree(proc.pid)
        sockets = listening_sockets(tree)
        assert len(tree) >= 4  # the driver, GCS, raylet, a replica at least: the walk saw Ray's processes
        assert ("127.0.0.1", port, ) in {(a, p) for a, p, _ in sockets}  # the HTTP proxy: the listing sees Ray's
        assert len(sockets) >= 4, sockets  # ... and GCS', the raylet's, the workers' own ports
        open_ = [(a, p, pid, Path(f"/proc/{pid}/cmdline").read_bytes()[:80]) for a, p, pid in sockets
                 if not ipaddress.ip_address(a).is_loopback]
        assert not open_, f"listening off the loopback: {open_}"
        deadline = time.monotonic() + 60  # the startup line follows serve.run, which may return after /readyz
        while "on a local Ray instance on 127.0.0.1 only" not in (tmp_path / "serve.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)  # c4u shuts Serve and Ray down
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of Ray's outlived its driver (its own session)
        except ProcessLookupError:
            pass
        log.close()
