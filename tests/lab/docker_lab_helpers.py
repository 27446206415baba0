"""Small protocol helpers shared by the Docker lab tests."""

from __future__ import annotations

import re
import time
import uuid
from typing import Callable, Optional, TypeVar

T = TypeVar("T")

APOP_TIMESTAMP = re.compile(rb"<[^<>@\s]+@[^<>\s]+>")


def token() -> str:
    return f"mailops-{uuid.uuid4().hex}"


def message(sender: str, rcpt: str, tok: str) -> str:
    return (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: docker lab {tok}\r\n"
            f"Message-ID: <{tok}@lab.test>\r\n\r\nround trip body {tok}\r\n")


def eventually(fn: Callable[[], Optional[T]], timeout: float = 30.0,
               interval: float = 0.2) -> T:
    """fn() until it returns something truthy, else AssertionError at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
