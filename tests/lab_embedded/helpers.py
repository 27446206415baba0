"""Small client-side helpers shared by the embedded lab tests."""

from __future__ import annotations

import socket
import time
from typing import Callable

SENDER = "sender@example.org"


def message(subject: str, body: str = "Hello.\r\n") -> bytes:
    return (f"From: {SENDER}\r\nTo: someone@lab.test\r\n"
            f"Subject: {subject}\r\n\r\n{body}").encode()


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll for something the lab's thread does asynchronously."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


class RawClient:
    """A line-oriented client for wire-level assertions poplib hides."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self) -> bytes:
        return self.file.readline()

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def cmd(self, text: str) -> bytes:
        self.send(text)
        return self.line()

    def multiline(self) -> list[bytes]:
        """Raw lines of a multi-line body up to and including ".\\r\\n"."""
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line in (b".\r\n", b""):
                return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
