"""A small OpenAI-compatible chat server on 127.0.0.1, for driving the real client in tests.

It serves ``POST /v1/chat/completions`` with and without ``stream: true`` (SSE chunks) and can
misbehave on purpose: fail with a status, stall, answer with broken JSON, or drop the connection
in the middle of a stream. Every request body and its headers are recorded.

>>> with FakeOpenAIServer(reply="Hello [1].") as server:
...     server.base_url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


@dataclass
class Fault:
    """One deliberate misbehaviour, served instead of a normal reply (then removed if `times`)."""

    kind: str  # "status" | "stall" | "malformed" | "drop_midstream"
    status: int = 500
    message: str = "internal error"
    stall_s: float = 0.0
    times: int | None = None  # None = every request


@dataclass
class FakeOpenAIServer:
    """Answers every chat request with `reply` (split on spaces into stream chunks)."""

    reply: str = "Hello."
    model: str = "fake-model"
    token_delay_s: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)
    reply_for: Callable[[dict], str] | None = None  # computes the reply from the request body

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        # A short poll: shutdown() waits for serve_forever's next poll (0.5 s by default) on every exit.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def next_fault(self) -> Fault | None:
        with self._lock:
            if not self.faults:
                return None
            fault = self.faults[0]
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.pop(0)
            return fault


def _make_handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def handle(self) -> None:
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):  # the client hung up first (a timeout, a stop)
                pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            headers = {k.lower(): v for k, v in self.headers.items()}
            server.requests.append({"path": self.path, "body": body, "headers": headers})
            if not self.path.endswith("/chat/completions"):
                return self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            fault = server.next_fault()
            text = server.reply_for(body) if server.reply_for else server.reply
            if fault is not None and fault.kind == "stall":
                time.sleep(fault.stall_s)
            if fault is not None and fault.kind == "status":
                # Echo the caller's credentials back, as a careless proxy might: the client must
                # not let them into its error messages.
                detail = f"{fault.message} (auth was {self.headers.get('Authorization')})"
                return self._send_json(fault.status, {"error": {"message": detail, "type": "server_error"}},
                                       extra_headers={"retry-after-ms": "5"})
            if fault is not None and fault.kind == "malformed":
                if body.get("stream"):
                    return self._send_stream(["data: {\"choices\": [{\"delta\": {\"content\": \"Hi\"\n\n"])
                return self._send_raw(200, b'{"id": "x", "choices": [', "application/json")
            events = _stream_events(text, server.model) if body.get("stream") else None
            if events is None:
                return self._send_json(200, _completion(text, server.model))
            if fault is not None and fault.kind == "drop_midstream":
                return self._send_stream(events[:2], drop=True)
            return self._send_stream(events)

        def _send_json(self, status: int, payload: dict, extra_headers: dict | None = None) -> None:
            self._send_raw(status, json.dumps(payload).encode(), "application/json", extra_headers)

        def _send_raw(self, status: int, data: bytes, content_type: str,
                      extra_headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            for name, value in (extra_headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True

        def _send_stream(self, events: list[str], drop: bool = False) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            for event in events:
                data = event.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                if server.token_delay_s:
                    time.sleep(server.token_delay_s)
            if not drop:  # a dropped stream ends without the terminating chunk
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            self.close_connection = True

    return Handler


def _completion(text: str, model: str) -> dict:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()),
                  "total_tokens": 10 + len(text.split())},
    }


def _stream_events(text: str, model: str) -> list[str]:
    words = text.split(" ")
    pieces = [word if index == 0 else " " + word for index, word in enumerate(words)]

    def event(delta: dict, finish: str | None = None) -> str:
        chunk = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(chunk)}\n\n"

    return ([event({"role": "assistant", "content": ""})] + [event({"content": piece}) for piece in pieces]
            + [event({}, "stop"), "data: [DONE]\n\n"])
