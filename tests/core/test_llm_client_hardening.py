"""The LLM client under hostile endpoints: the API key never survives into an error (issue 15 item 2), and a slow or
dead endpoint costs a bounded time (item 6)."""

import json
import secrets
import string
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ultraedit_dagster.core.llm_client import MAX_ERROR_CHARS, LLMClient, scrub_secret

KEY = "sk-" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(34))  # 37 characters


class EchoServer:
    """Answers each chat request as its `mode` says, echoing the Authorization header at a chosen offset."""

    def __init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                spec = json.loads(body["messages"][0]["content"])
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                echoed = "x" * spec["offset"] + f"invalid api key {key} sent"
                mode = spec["mode"]
                if mode == "trickle":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    try:
                        while not outer.stop.is_set():
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(0.05)
                    except OSError:
                        pass
                    return
                status, payload = {
                    "400": (400, json.dumps({"error": {"message": echoed}})),
                    "500": (500, json.dumps({"error": {"message": echoed}})),
                    "json_escaped": (400, json.dumps({"error": {"message": echoed}}, ensure_ascii=True)),
                    "malformed": (200, "not json " + echoed),
                    "bad_shape": (200, json.dumps({"choices": echoed})),
                }[mode]
                data = payload.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.stop = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = EchoServer()
    yield s
    s.close()


def _leaks(text: str | None, key: str = KEY, window: int = 6) -> list[str]:
    text = text or ""
    return [key[i : i + window] for i in range(len(key) - window + 1) if key[i : i + window] in text]


def _ask(client: LLMClient, mode: str, offset: int):
    return client.chat([{"role": "user", "content": json.dumps({"mode": mode, "offset": offset})}])


def test_the_key_never_survives_into_an_error_at_any_offset(server, tmp_path):
    client = LLMClient(model="m", api_key=KEY, base_url=server.url, cache_dir=None, max_retries=0)
    # every offset that puts the key before, across and after the 300-character cut
    for offset in range(0, MAX_ERROR_CHARS + 40):
        for mode in ("400", "500") if offset % 7 else ("400", "500", "json_escaped", "malformed", "bad_shape"):
            res = _ask(client, mode, offset)
            assert not res.ok
            assert not _leaks(res.error), (mode, offset, res.error)
            assert len(res.error) <= MAX_ERROR_CHARS + 40
    assert KEY not in repr(client)


@pytest.mark.parametrize("offset", range(0, 60))
def test_scrub_before_cut(offset):
    text = "e" * offset + KEY + "tail"
    cut = scrub_secret(text, KEY)[:40]
    assert not _leaks(cut)
    assert scrub_secret(json.dumps({"k": KEY}), KEY) == '{"k": "***"}'
    assert scrub_secret("a%2Fb", "a/b") == "***"
    assert scrub_secret("plain", "") == "plain"


def test_a_trickling_server_is_cut_at_the_total_deadline(server):
    # each byte arrives well within the per-read timeout, so only a total deadline ends the call
    client = LLMClient(model="m", api_key=KEY, base_url=server.url, cache_dir=None, timeout=2.0, deadline=1.5)
    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("res", _ask(client, "trickle", 0)), daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "the call was still running after 20 s"
    res = box["res"]
    assert time.monotonic() - started < 6
    assert not res.ok and res.retryable and "1.5 s total deadline" in res.error, res.error


def test_the_circuit_breaker_fails_fast_after_consecutive_transport_failures(server):
    from tests.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: connection refused
    client = LLMClient(
        model="m",
        base_url=dead,
        cache_dir=None,
        max_retries=1,
        breaker_threshold=3,
        breaker_cooldown=60,
        sleep=lambda s: None,
    )
    first = [_ask(client, "400", i) for i in range(3)]
    assert all(r.retryable and r.attempts == 2 and r.error.startswith("connection error") for r in first)
    sent = client.requests_sent
    fast = [_ask(client, "400", i) for i in range(5)]
    assert client.requests_sent == sent  # nothing sent while the circuit is open
    for r in fast:
        assert r.retryable and r.attempts == 0 and r.error.startswith("circuit open: 3 consecutive transport failures")
    mods = client.moderate(["a", "b"])
    assert all(m.retryable and m.error.startswith("circuit open") for m in mods)

    # a deterministic refusal (HTTP 400) is no transport failure; a new shard starts with a closed breaker
    client.reset_breaker()
    client._client = client._client.with_options(base_url=server.url)
    res = _ask(client, "400", 0)
    assert res.error.startswith("HTTP 400") and not res.retryable and res.attempts == 1
    assert client._transport_failures == 0


def test_the_breaker_lets_one_probe_through_after_its_cooldown():
    from tests.conftest import free_port

    client = LLMClient(
        model="m",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        cache_dir=None,
        max_retries=0,
        breaker_threshold=2,
        breaker_cooldown=0.3,
    )
    for i in range(2):
        assert _ask(client, "400", i).error.startswith("connection error")
    assert _ask(client, "400", 9).error.startswith("circuit open")
    time.sleep(0.35)
    assert _ask(client, "400", 10).error.startswith("connection error")  # the probe was sent (and failed)
    assert _ask(client, "400", 11).error.startswith("circuit open")
