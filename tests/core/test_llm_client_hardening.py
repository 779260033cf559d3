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
