"""In-memory mailboxes shared by the SMTP and POP3 listeners.

The lab's event loop thread writes (SMTP delivery, POP3 deletions) while the
test thread reads and pre-loads, so every access goes through one lock.
"""

from __future__ import annotations

import hmac
import itertools
import secrets
import threading
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional


class UnknownMailbox(KeyError):
    """No account matches the user name or address."""


@dataclass(frozen=True)
class Message:
    uid: str    # UIDL value: unique in this store, never reused
    data: bytes  # the raw message, CRLF line endings, ends with CRLF

    @property
    def size(self) -> int:
        return len(self.data)


def normalize(raw: bytes) -> bytes:
    """CRLF line endings, final CRLF: the form POP3 sizes are counted in."""
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if text and not text.endswith(b"\n"):
        text += b"\n"
    return text.replace(b"\n", b"\r\n")


class MailStore:
    """Accounts ({username: password}) and one maildrop per account."""

    def __init__(self, accounts: Mapping[str, str]) -> None:
        self._lock = threading.Lock()
        self.accounts: dict[str, str] = dict(accounts)
        self._boxes: dict[str, list[Message]] = {u: [] for u in self.accounts}
        self._locked: set[str] = set()
        self._counter = itertools.count(1)
        # A per-store token keeps UIDLs of two lab runs apart, so a client
        # that remembers UIDLs across runs never mistakes a message as seen.
        self._token = secrets.token_hex(4)

    # -- accounts ---------------------------------------------------------

    def mailbox_for(self, address: str) -> Optional[str]:
        """Account for an address, by local part (alice@lab.test -> alice).

        The domain is deliberately ignored: the lab is the final destination
        for every address it is handed.  Matching is case-insensitive.
        """
        local = address.strip().strip("<>").rpartition("@")[0] or address
        local = local.strip("<>").lower()
        with self._lock:
            for user in self.accounts:
                if user.lower() == local:
                    return user
        return None

    def add_account(self, user: str, password: str) -> None:
        """Add (or re-password) an account, also while the lab runs."""
        with self._lock:
            self.accounts[user] = password
            self._boxes.setdefault(user, [])

    def password(self, user: str) -> Optional[str]:
        """The plaintext password (CRAM-MD5 and APOP need it), or None."""
        with self._lock:
            return self.accounts.get(user)

    def check_password(self, user: str, password: str) -> bool:
        expected = self.password(user)
        if expected is None:
            return False
        return hmac.compare_digest(expected.encode(), password.encode())

    # -- messages ---------------------------------------------------------

    def add(self, user: str, raw: bytes) -> str:
        """Put a message straight into ``user``'s maildrop; returns its UIDL."""
        data = normalize(raw)
        with self._lock:
            box = self._box(user)
            uid = f"{next(self._counter):06d}.{self._token}"
            box.append(Message(uid, data))
        return uid

    def deliver(self, rcpt: str, raw: bytes) -> str:
        """Deliver to the mailbox an address maps to; returns the UIDL."""
        user = self.mailbox_for(rcpt)
        if user is None:
            raise UnknownMailbox(rcpt)
        return self.add(user, raw)

    def messages(self, user: str) -> list[Message]:
        """A snapshot of ``user``'s maildrop, oldest first."""
        with self._lock:
            return list(self._box(user))

    def delete(self, user: str, uids: Iterable[str]) -> int:
        """Remove messages by UIDL; returns how many were removed."""
        doomed = set(uids)
        with self._lock:
            box = self._box(user)
            keep = [m for m in box if m.uid not in doomed]
            removed = len(box) - len(keep)
            box[:] = keep
        return removed

    def clear(self, user: Optional[str] = None) -> None:
        """Empty one maildrop, or all of them."""
        with self._lock:
            for name in [user] if user is not None else list(self._boxes):
                self._box(name).clear()

    # -- POP3 maildrop lock (RFC 1939: exclusive access in TRANSACTION) ----

    def try_lock(self, user: str) -> bool:
        with self._lock:
            if user in self._locked:
                return False
            self._locked.add(user)
            return True

    def unlock(self, user: str) -> None:
        with self._lock:
            self._locked.discard(user)

    def is_locked(self, user: str) -> bool:
        with self._lock:
            return user in self._locked

    def _box(self, user: str) -> list[Message]:
        # Caller holds self._lock.  Boxes of accounts added after start are
        # created on first use.
        if user not in self.accounts:
            raise UnknownMailbox(user)
        return self._boxes.setdefault(user, [])
