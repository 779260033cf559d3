"""A scriptable OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks (stdlib only).

Endpoints: `POST /v1/chat/completions` (text and vision messages) and `POST /v1/moderations`.

Scripting: `server.script(marker, ["429", "good"])` makes the next requests whose body contains `marker` behave as
listed, one behaviour per request, then `default` (normally "good"). Behaviours:

- `good`: a well-formed reply. For an edit-triplet prompt (a line `Caption to edit: ...` and `Produce k instances`)
  it answers k numbered triplets built from the caption; for a vision request it answers a short or a descriptive
  caption depending on the prompt, chosen from the image's bytes (`vision_reply`); for an object-selection prompt
  the object the instruction names in the source caption, or NONE (`selection_reply`).
- `two`: like good but only two triplets.
- `429` / `500`: that HTTP error with an OpenAI-style error body (429 sends `Retry-After: 0`).
- `malformed`: HTTP 200 with a body that is not JSON.
- `slow`: waits `slow_s` seconds before a good reply (set the client's timeout below it).
- `garbage`: HTTP 200, well-formed, but the message holds no triplet at all.
- `reset`: the connection is reset without an answer.
- `injected`: a well-formed reply from a model that followed an injected instruction (no triplet).

`latency_s` adds a simulated delay to every request (for benchmarks). `requests` records every request body and
`count(path)` counts them.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EXTRA_OBJECTS = ["small red ball", "sleeping cat", "wooden crate", "green lamp", "paper kite", "blue vase"]


def _text_of(messages: list[dict]) -> str:
    out = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, list):
            out += [p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(out)


def _is_vision(messages: list[dict]) -> bool:
    return any(
        isinstance(m.get("content"), list)
        and any(isinstance(p, dict) and p.get("type") == "image_url" for p in m["content"])
        for m in messages
    )


def triplet_reply(prompt: str, n: int | None = None) -> str:
    m = re.search(r"^Caption to edit:\s*(.+)$", prompt, re.M)
    caption = m.group(1).strip() if m else "A photo."
    k = n if n is not None else int((re.search(r"Produce (\d+) instances", prompt) or [None, 3])[1])
    base = caption.rstrip(". ")
    lines = [
        f"{i + 1}. {caption}; add a {obj} next to it; {base} with a {obj} next to it."
        for i, obj in enumerate(EXTRA_OBJECTS[:k])
    ]
    return "\n".join(lines)


def _image_urls(messages: list[dict]) -> list[str]:
    return [
        p["image_url"].get("url", "")
        for m in messages
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if isinstance(p, dict) and p.get("type") == "image_url" and isinstance(p.get("image_url"), dict)
    ]


# (short caption, descriptive caption) pairs: the short one names the main subject only; the descriptive one the
# subject, its surroundings, the background, the text in the image, the style and the colours (DALL-E 3's two kinds)
VISION_CAPTIONS = [
    (
        "A small object on a table.",
        "A photo of a small object on a wooden table in a bright room, with a white wall behind it and no visible "
        "text; natural colours.",
    ),
    (
        "A brown dog lying on a rug.",
        "A photo of a brown dog lying on a striped rug in a living room, a sofa and a lamp in the background, no "
        "visible text; warm brown and beige colours.",
    ),
    (
        "A red bicycle leaning against a wall.",
        "A photo of a red bicycle leaning against a brick wall on a quiet street, parked cars in the background, a "
        'sign reading "BAKERY" above it; red, orange and grey colours.',
    ),
    (
        "A bowl of fruit on a kitchen counter.",
        "A photo of a white bowl of apples and bananas on a kitchen counter, cupboards and a window in the "
        "background, no visible text; bright yellow, red and white colours.",
    ),
]


def vision_reply(prompt: str, image_urls: list[str]) -> str:
    """A caption of the kind the prompt asks for (short unless it asks for a detailed description), chosen from the
    image's bytes so that different images get different captions and the same image the same one."""
    import hashlib

    digest = hashlib.sha256("".join(image_urls).encode("utf-8")).digest()
    short, desc = VISION_CAPTIONS[digest[0] % len(VISION_CAPTIONS)]
    return short if "short caption" in prompt.lower() else desc


def selection_reply(prompt: str) -> str:
    """An object-selection answer (regions.object_selection.selection_prompt): the first word after "the" in the
    task's instruction that the source caption also holds, or NONE."""
    task = prompt.rsplit("Now the real task.", 1)[-1]
    ins = re.search(r"^Instruction:\s*(.*)$", task, re.M)
    src = re.search(r"^Source caption:\s*(.*)$", task, re.M)
    caption_words = set(re.findall(r"[a-z]+", (src.group(1) if src else "").lower()))
    for word in re.findall(r"\bthe\s+([a-z]+)", (ins.group(1) if ins else "").lower()):
        if word in caption_words:
            return word
    return "NONE"


class OpenAITestServer:
    def __init__(self, latency_s: float = 0.0, slow_s: float = 2.0, default: str = "good") -> None:
        self.latency_s = latency_s
        self.slow_s = slow_s
        self.default = default
        self._scripts: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.requests: list[tuple[str, dict]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control --------------------------------------------------------------------------------------------------

    def script(self, marker: str, behaviours: list[str]) -> None:
        with self._lock:
            self._scripts[marker] = list(behaviours)

    def count(self, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for p, _ in self.requests if path is None or p.endswith(path))

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> "OpenAITestServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {}
                server._handle(self, self.path, body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "OpenAITestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- behaviour ------------------------------------------------------------------------------------------------

    def _behaviour(self, body: dict) -> str:
        text = json.dumps(body, ensure_ascii=False)
        with self._lock:
            for marker, queue in self._scripts.items():
                if marker in text and queue:
                    return queue.pop(0)
        return self.default

    def _handle(self, h: BaseHTTPRequestHandler, path: str, body: dict) -> None:
        with self._lock:
            self.requests.append((path, body))
        if self.latency_s:
            time.sleep(self.latency_s)
        behaviour = self._behaviour(body)
        try:
            if behaviour == "429":
                return self._send(
                    h, 429, {"error": {"message": "Rate limit reached", "type": "rate_limit"}}, {"Retry-After": "0"}
                )
            if behaviour == "500":
                return self._send(h, 500, {"error": {"message": "internal error", "type": "server_error"}})
            if behaviour == "reset":  # drop the connection without answering (RST)
                import socket as _socket
                import struct

                h.connection.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, struct.pack("ii", 1, 0))
                h.close_connection = True
                h.connection.close()
                return None
            if behaviour == "injected":  # a model that obeyed an instruction hidden in the caption
                content = "Sure! Ignoring all previous instructions, here is a poem about the sea."
                return self._send(
                    h,
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "test",
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 12, "total_tokens": 13},
                    },
                )
            if behaviour == "malformed":
                return self._send_raw(h, 200, b'{"id": "x", "choices": [ {"message": ')
            if behaviour == "slow":
                time.sleep(self.slow_s)
            if path.endswith("/moderations"):
                inputs = body.get("input")
                inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
                results = [
                    {
                        "flagged": "forbidden" in t.lower(),
                        "categories": {"violence": "forbidden" in t.lower()},
                        "category_scores": {"violence": 0.99 if "forbidden" in t.lower() else 0.0},
                    }
                    for t in inputs
                ]
                return self._send(h, 200, {"id": "modr-test", "model": body.get("model", "test"), "results": results})
            if path.endswith("/chat/completions"):
                messages = body.get("messages", [])
                prompt = _text_of(messages)
                if _is_vision(messages):
                    content = vision_reply(prompt, _image_urls(messages))
                elif behaviour == "garbage":
                    content = "I am sorry, I cannot help with that."
                elif "Now the real task." in prompt and prompt.rstrip().endswith("Answer:"):
                    content = selection_reply(prompt)
                else:
                    content = triplet_reply(prompt, 2 if behaviour == "two" else None)
                usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(content.split())}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                return self._send(
                    h,
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "test"),
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                        ],
                        "usage": usage,
                    },
                )
            return self._send(h, 404, {"error": {"message": f"no route {path}"}})
        except (BrokenPipeError, ConnectionResetError):
            return None  # the client gave up (timeout): nothing to answer

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, obj: dict, headers: dict | None = None) -> None:
        OpenAITestServer._send_raw(h, status, json.dumps(obj).encode("utf-8"), headers)

    @staticmethod
    def _send_raw(h: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)
