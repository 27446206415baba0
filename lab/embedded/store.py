"""In-memory mailboxes shared by the SMTP, POP3 and IMAP listeners.

Every account has the folders in FOLDERS.  SMTP delivers into INBOX (or into
Junk when the mail carries the junk marker, see is_junk), POP3 reads and
deletes in INBOX only, IMAP sees every folder with UIDs, flags and internal
dates.  The lab's event loop thread writes (delivery, deletions, flag
changes) while the test thread reads and pre-loads, so every access goes
through one lock; watch() tells IMAP sessions (IDLE) that a folder changed.
"""

from __future__ import annotations

import datetime
import hmac
import itertools
import secrets
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional


class UnknownMailbox(KeyError):
    """No account matches the user name or address."""


class UnknownFolder(KeyError):
    """The account has no folder of that name."""


@dataclass(frozen=True)
class Message:
    uid: str    # UIDL value: unique in this store, never reused
    data: bytes  # the raw message, CRLF line endings, ends with CRLF

    @property
    def size(self) -> int:
        return len(self.data)


INBOX = "INBOX"
# (name, RFC 6154 special-use attribute) of every account's folders.
FOLDERS: tuple[tuple[str, Optional[str]], ...] = (
    (INBOX, None),
    ("Junk", "\\Junk"),
    ("Trash", "\\Trash"),
    ("Sent", "\\Sent"),
)
JUNK = "Junk"

# A delivery carrying either marker lands in Junk instead of INBOX, so a
# test can make the lab file a probe as spam.
JUNK_HEADER = "X-Lab-Junk"        # with the value "yes"
JUNK_SUBJECT_MARK = "[lab-junk]"  # anywhere in the Subject

DELETED = "\\Deleted"
SEEN = "\\Seen"


def normalize(raw: bytes) -> bytes:
    """CRLF line endings, final CRLF: the form POP3 sizes are counted in."""
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if text and not text.endswith(b"\n"):
        text += b"\n"
    return text.replace(b"\n", b"\r\n")


def header_fields(data: bytes) -> list[tuple[str, str]]:
    """(name, unfolded value) of each header field, in message order."""
    head = data.split(b"\r\n\r\n", 1)[0] if not data.startswith(b"\r\n") \
        else b""
    fields: list[tuple[str, str]] = []
    for line in head.split(b"\r\n"):
        text = line.decode("utf-8", "replace")
        if text[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {text.strip()}")
            continue
        name, sep, value = text.partition(":")
        if sep and name and " " not in name:
            fields.append((name, value.strip()))
    return fields


def is_junk(data: bytes) -> bool:
    """Whether a delivery carries the lab's junk marker (see JUNK_HEADER)."""
    for name, value in header_fields(data):
        lname = name.lower()
        if lname == JUNK_HEADER.lower() and value.lower() == "yes":
            return True
        if lname == "subject" and JUNK_SUBJECT_MARK in value.lower():
            return True
    return False


@dataclass(frozen=True)
class Entry:
    """A message as IMAP sees it in one folder (a snapshot)."""

    uid: int                    # IMAP UID, per folder, never reused
    message: Message
    flags: frozenset[str]
    internaldate: datetime.datetime
    recent: bool = False        # \Recent not yet claimed by any session


@dataclass(frozen=True)
class FolderInfo:
    """A folder's STATUS values and identity (a snapshot)."""

    name: str
    special_use: Optional[str]
    uidvalidity: int
    uidnext: int
    messages: int
    unseen: int
    recent: int


@dataclass
class _Slot:
    message: Message
    uid: int
    flags: set[str]
    internaldate: datetime.datetime
    recent: bool = True  # not yet claimed by a session (RFC 3501 \Recent)

    def entry(self) -> Entry:
        return Entry(self.uid, self.message, frozenset(self.flags),
                     self.internaldate, self.recent)


@dataclass
class _Folder:
    name: str
    special_use: Optional[str]
    uidvalidity: int
    uidnext: int = 1
    slots: list[_Slot] = field(default_factory=list)


Watcher = Callable[[str, str], None]


def _now() -> datetime.datetime:
    return datetime.datetime.now().astimezone().replace(microsecond=0)


class MailStore:
    """Accounts ({username: password}) and the folders of each account."""

    def __init__(self, accounts: Mapping[str, str]) -> None:
        self._lock = threading.Lock()
        self.accounts: dict[str, str] = dict(accounts)
        self._folders: dict[str, dict[str, _Folder]] = {}
        self._locked: set[str] = set()
        self._counter = itertools.count(1)
        self._watchers: list[Watcher] = []
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
            self._account(user)

    def password(self, user: str) -> Optional[str]:
        """The plaintext password (CRAM-MD5 and APOP need it), or None."""
        with self._lock:
            return self.accounts.get(user)

    def check_password(self, user: str, password: str) -> bool:
        expected = self.password(user)
        if expected is None:
            return False
        return hmac.compare_digest(expected.encode(), password.encode())

    # -- messages (INBOX unless told otherwise) ----------------------------

    def add(self, user: str, raw: bytes, folder: str = INBOX, *,
            flags: Iterable[str] = (),
            internaldate: Optional[datetime.datetime] = None) -> str:
        """Put a message straight into a folder (INBOX: the POP3 maildrop);
        returns its UIDL."""
        return self._insert(user, folder, normalize(raw), flags,
                            internaldate).message.uid

    def append(self, user: str, folder: str, raw: bytes, *,
               flags: Iterable[str] = (),
               internaldate: Optional[datetime.datetime] = None
               ) -> tuple[int, int]:
        """IMAP APPEND: store a message; returns (UIDVALIDITY, UID)."""
        slot = self._insert(user, folder, normalize(raw), flags,
                            internaldate)
        return self.folder_info(user, folder).uidvalidity, slot.uid

    def deliver(self, rcpt: str, raw: bytes) -> str:
        """Deliver to the mailbox an address maps to; returns the UIDL.

        A mail with the junk marker (see is_junk) goes to Junk, any other
        to INBOX."""
        user = self.mailbox_for(rcpt)
        if user is None:
            raise UnknownMailbox(rcpt)
        data = normalize(raw)
        return self._insert(user, JUNK if is_junk(data) else INBOX, data,
                            (), None).message.uid

    def messages(self, user: str, folder: str = INBOX) -> list[Message]:
        """A snapshot of a folder (INBOX: the POP3 maildrop), oldest first."""
        with self._lock:
            return [s.message for s in self._folder(user, folder).slots]

    def delete(self, user: str, uids: Iterable[str],
               folder: str = INBOX) -> int:
        """Remove messages by UIDL; returns how many were removed."""
        doomed = set(uids)
        with self._lock:
            box = self._folder(user, folder)
            keep = [s for s in box.slots if s.message.uid not in doomed]
            removed = len(box.slots) - len(keep)
            box.slots[:] = keep
        if removed:
            self._notify(user, box.name)
        return removed

    def clear(self, user: Optional[str] = None) -> None:
        """Empty every folder of one account, or of all of them."""
        changed = []
        with self._lock:
            for name in [user] if user is not None else list(self.accounts):
                for box in self._account(name).values():
                    if box.slots:
                        box.slots.clear()
                        changed.append((name, box.name))
        for name, folder in changed:
            self._notify(name, folder)

    # -- IMAP: folders, UIDs, flags ----------------------------------------

    def folders(self, user: str) -> list[tuple[str, Optional[str]]]:
        """(name, special-use attribute or None) of the account's folders."""
        with self._lock:
            return [(f.name, f.special_use)
                    for f in self._account(user).values()]

    def folder_info(self, user: str, folder: str) -> FolderInfo:
        return self.snapshot(user, folder)[0]

    def entries(self, user: str, folder: str) -> list[Entry]:
        """Snapshots of a folder's messages, in UID order."""
        return self.snapshot(user, folder)[1]

    def snapshot(self, user: str,
                 folder: str) -> tuple[FolderInfo, list[Entry]]:
        """A folder's status and messages, taken at one instant."""
        with self._lock:
            box = self._folder(user, folder)
            info = FolderInfo(
                box.name, box.special_use, box.uidvalidity, box.uidnext,
                len(box.slots),
                sum(1 for s in box.slots if SEEN not in s.flags),
                sum(1 for s in box.slots if s.recent))
            return info, [s.entry() for s in box.slots]

    def claim_recent(self, user: str, folder: str) -> set[int]:
        """UIDs that were \\Recent and now are this caller's alone (the
        first session to see a message gets its \\Recent, RFC 3501)."""
        with self._lock:
            claimed = set()
            for slot in self._folder(user, folder).slots:
                if slot.recent:
                    slot.recent = False
                    claimed.add(slot.uid)
            return claimed

    def set_flags(self, user: str, folder: str, uids: Iterable[int],
                  mode: str, flags: Iterable[str]) -> dict[int, frozenset[str]]:
        """STORE: mode "+" adds, "-" removes, "" replaces; returns the new
        flags of every message that still exists, by UID."""
        wanted, new = set(uids), set(flags)
        result: dict[int, frozenset[str]] = {}
        changed = False
        with self._lock:
            box = self._folder(user, folder)
            for slot in box.slots:
                if slot.uid not in wanted:
                    continue
                before = set(slot.flags)
                if mode == "+":
                    slot.flags |= new
                elif mode == "-":
                    slot.flags -= new
                else:
                    slot.flags = set(new)
                changed = changed or slot.flags != before
                result[slot.uid] = frozenset(slot.flags)
        if changed:
            self._notify(user, box.name)
        return result

    def expunge(self, user: str, folder: str,
                uids: Optional[Iterable[int]] = None) -> list[int]:
        """Remove the \\Deleted messages (only those among ``uids`` if
        given); returns the UIDs removed."""
        only = None if uids is None else set(uids)
        with self._lock:
            box = self._folder(user, folder)
            gone = [s.uid for s in box.slots if DELETED in s.flags
                    and (only is None or s.uid in only)]
            box.slots[:] = [s for s in box.slots if s.uid not in gone]
        if gone:
            self._notify(user, box.name)
        return gone

    def copy(self, user: str, folder: str, uids: Iterable[int], target: str,
             *, move: bool = False) -> list[tuple[int, int]]:
        """COPY (or MOVE) messages to ``target``; returns (old UID, new UID)
        pairs.  Copies get fresh UIDLs; flags and internal dates stay."""
        wanted = set(uids)
        with self._lock:
            box = self._folder(user, folder)
            dest = self._folder(user, target)
            pairs = []
            for slot in [s for s in box.slots if s.uid in wanted]:
                copy = _Slot(self._message(slot.message.data), dest.uidnext,
                             set(slot.flags), slot.internaldate)
                dest.uidnext += 1
                dest.slots.append(copy)
                pairs.append((slot.uid, copy.uid))
            if move:
                moved = {old for old, _new in pairs}
                box.slots[:] = [s for s in box.slots if s.uid not in moved]
        if pairs:
            self._notify(user, dest.name)
            if move:
                self._notify(user, box.name)
        return pairs

    def watch(self, callback: Watcher) -> Callable[[], None]:
        """Call ``callback(user, folder)`` after every change to a folder
        (from whichever thread made it; outside the store's lock); returns
        the function that stops it."""
        with self._lock:
            self._watchers.append(callback)

        def unwatch() -> None:
            with self._lock:
                if callback in self._watchers:
                    self._watchers.remove(callback)
        return unwatch

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

    # -- internals (callers of the underscore helpers hold self._lock) -----

    def _message(self, data: bytes) -> Message:
        return Message(f"{next(self._counter):06d}.{self._token}", data)

    def _insert(self, user: str, folder: str, data: bytes,
                flags: Iterable[str],
                internaldate: Optional[datetime.datetime]) -> _Slot:
        with self._lock:
            box = self._folder(user, folder)
            slot = _Slot(self._message(data), box.uidnext, set(flags),
                         internaldate or _now())
            box.uidnext += 1
            box.slots.append(slot)
        self._notify(user, box.name)
        return slot

    def _notify(self, user: str, folder: str) -> None:
        with self._lock:
            watchers = list(self._watchers)
        for callback in watchers:
            callback(user, folder)

    def _account(self, user: str) -> dict[str, _Folder]:
        # Folders of accounts added after start are created on first use.
        if user not in self.accounts:
            raise UnknownMailbox(user)
        folders = self._folders.get(user)
        if folders is None:
            folders = self._folders[user] = {
                name: _Folder(name, special,
                              secrets.randbelow(2**31 - 1) + 1)
                for name, special in FOLDERS}
        return folders

    def _folder(self, user: str, folder: str) -> _Folder:
        folders = self._account(user)
        name = INBOX if folder.upper() == INBOX else folder
        box = folders.get(name)
        if box is None:
            raise UnknownFolder(folder)
        return box
