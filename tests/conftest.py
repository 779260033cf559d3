"""Shared fixtures: a temporary lake, an ephemeral Dagster instance with shards, moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Tests never touch the developer's .ultraedit folder or a real model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]


# -- no connection outside 127.0.0.1 (issue 15, "Done when") ------------------------------------------------------
# One guard, installed in this process and, through a generated `sitecustomize.py` on PYTHONPATH, in every Python
# subprocess a test starts (the CLI, dagster's daemon and code servers, moto, dbt): a connect / sendto to an address
# that is not loopback, or a name lookup of a host that is not this machine, raises and is appended to a log that the
# session checks at the end (so a violation swallowed by an `except Exception` still fails the run). Cheap: one check
# per connect, no I/O unless something is refused.
NET_GUARD = r"""
import functools, ipaddress, os, socket

_LOG = os.environ.get("ULTRAEDIT_NET_GUARD_LOG", "")
_LOCAL_NAMES = {None, "", "localhost", "localhost.localdomain", "ip6-localhost", socket.gethostname()}


@functools.lru_cache(maxsize=256)  # a test talks to a handful of hosts: judge each once
def _is_local(host):
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host in _LOCAL_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    # loopback, or the unspecified address (0.0.0.0 / ::, which a connect reaches on this machine and a bind uses)
    return ip.is_loopback or ip.is_unspecified or (mapped is not None and mapped.is_loopback)


def _refuse(what, target):
    message = f"outbound network access refused in tests: {what} {target!r} (pid {os.getpid()})"
    if _LOG:
        try:
            with open(_LOG, "a", encoding="utf-8") as fh:
                fh.write(message + "\n")
        except OSError:
            pass
    raise ConnectionRefusedError(message)


def _guard_address(sock, address, what):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) and address:
        if not _is_local(address[0]):
            _refuse(what, address)


def install():
    if getattr(socket, "_ultraedit_net_guard", False):
        return
    socket._ultraedit_net_guard = True
    connect, connect_ex, sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
    getaddrinfo = socket.getaddrinfo

    def guarded_connect(self, address):
        _guard_address(self, address, "connect to")
        return connect(self, address)

    def guarded_connect_ex(self, address):
        _guard_address(self, address, "connect to")
        return connect_ex(self, address)

    def guarded_sendto(self, data, *args):
        _guard_address(self, args[-1], "send to")
        return sendto(self, data, *args)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if not _is_local(host):
            try:
                ipaddress.ip_address(host.decode() if isinstance(host, bytes) else str(host))
                _refuse("connect to", host)
            except ValueError:
                _refuse("name lookup of", host)
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = guarded_connect, guarded_connect_ex
    socket.socket.sendto, socket.getaddrinfo = guarded_sendto, guarded_getaddrinfo


install()
"""


def _install_net_guard() -> Path:
    """Install the guard here and for subprocesses; returns the violations log."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="ultraedit-netguard-"))
    (folder / "sitecustomize.py").write_text(NET_GUARD, encoding="utf-8")
    log = folder / "violations.log"
    os.environ["ULTRAEDIT_NET_GUARD_LOG"] = str(log)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    exec(compile(NET_GUARD, str(folder / "sitecustomize.py"), "exec"), {"__name__": "ultraedit_net_guard"})
    return log


NET_GUARD_LOG = _install_net_guard()


def pytest_sessionfinish(session, exitstatus):
    """Fail the session when any process (this one or a subprocess) tried to reach a non-loopback address."""
    if NET_GUARD_LOG.exists() and NET_GUARD_LOG.read_text(encoding="utf-8").strip():
        lines = NET_GUARD_LOG.read_text(encoding="utf-8").strip().splitlines()
        print(f"\n{len(lines)} outbound network attempt(s) during the tests:\n  " + "\n  ".join(lines[:20]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lake(tmp_path):
    from ultraedit_dagster.lake.store import Lake

    return Lake(str(tmp_path / "lake"))


@pytest.fixture
def instance():
    import dagster as dg

    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


class MotoServer:
    """moto's S3 server as a separate process on 127.0.0.1: the real S3 protocol over HTTP, stoppable mid-test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )


@pytest.fixture
def moto_server(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = MotoServer()
    server.start()
    yield server
    server.stop()


def require_system_package(path: str, package: str) -> None:
    """Skip when a Debian package a test needs is absent, except in CI, where `make test` installs it: there its
    absence is a failure, so a broken install step cannot turn tests into silent skips."""
    if Path(path).exists():
        return
    message = f"{path} missing: install the Debian package {package} (make system-deps)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
