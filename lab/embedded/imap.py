"""A small asyncio IMAP server: IMAP4rev1 (RFC 3501), the subset clients use.

Extensions: STARTTLS and LOGINDISABLED (RFC 3501), AUTH=PLAIN and
AUTH=CRAM-MD5 with SASL-IR (RFC 4959), IDLE (RFC 2177), UIDPLUS (RFC 4315),
MOVE (RFC 6851), SPECIAL-USE (RFC 6154), LITERAL+ (RFC 7888), ID (RFC 2971),
NAMESPACE (RFC 2342), UNSELECT (RFC 3691); on a lab with an OAuth key also
AUTH=XOAUTH2 and AUTH=OAUTHBEARER (RFC 7628), with PLAIN's TLS rule.

One ImapSession per connection walks the RFC 3501 states (not
authenticated, authenticated, selected, logout).  The folders, UIDs and
flags live in the shared MailStore, so SMTP deliveries show up here and
concurrent sessions see each other's changes: before a command runs, the
session reports what changed since it last looked (EXISTS, RECENT, flag
FETCHes, and EXPUNGE where RFC 3501 7.4.1 allows it: not before FETCH,
STORE, SEARCH, COPY or MOVE by sequence number); IDLE pushes the same.
There is no mailbox lock: IMAP allows concurrent sessions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import email.errors
import email.header
import email.utils
import hmac
import logging
import os
import re
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from typing import (TYPE_CHECKING, Any, Awaitable, Callable, Iterable,
                    Optional, Union)

from .certs import LabCerts
from .store import (DELETED, INBOX, JUNK, SEEN, Entry, MailStore,
                    UnknownFolder, header_fields)
from .variants import TLS_IMPLICIT, TLS_STARTTLS, Hooks, Tweaks, Variant

if TYPE_CHECKING:  # not at run time (see smtp.py)
    from .oauth import OAuthServer

log = logging.getLogger(__name__)

NOT_AUTHENTICATED = "NOT_AUTHENTICATED"
AUTHENTICATED = "AUTHENTICATED"
SELECTED = "SELECTED"
LOGOUT = "LOGOUT"

BANNER = "mailops embedded lab IMAP ready"
IMPLEMENTATION = "mailops-embedded-lab"
# RFC 3501 5.4: the autologout timer must be at least 30 minutes.
IDLE_TIMEOUT = 1800.0
# How long a closing connection may take to say goodbye before it is cut.
CLOSE_TIMEOUT = 5.0
MAX_LINE = 65536
MAX_LITERAL = 64 * 1024 * 1024
DELIMITER = "/"
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
RECENT = "\\Recent"
# What a variant without SPECIAL-USE calls the store's Junk folder.
NO_SPECIAL_USE_NAMES = {JUNK: "Spam"}

# Hook names that are not IMAP commands (see variants.Hook).
PSEUDO_COMMANDS = frozenset(("CONNECT", "GREETING", "REPLY"))

_LITERAL = re.compile(rb"\{(\d+)(\+?)\}$")
_TAG = re.compile(r"[^\s(){%*\"\\\]+]+")
_ATOM_OUT = re.compile(r"[A-Za-z0-9._-]+")
_SECTION = re.compile(r"(BODY(?:\.PEEK)?)\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?",
                      re.IGNORECASE)
_FIELDS = re.compile(r"(HEADER\.FIELDS(?:\.NOT)?)\s*\((.*)\)",
                     re.IGNORECASE | re.DOTALL)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
           "Oct", "Nov", "Dec")

# A parsed argument: an atom or quoted string (str), a literal (bytes) or a
# parenthesized list.
Token = Union[str, bytes, list]


class ImapError(Exception):
    """Ends a command with a tagged ``kind`` (NO or BAD) reply."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text


def bad(text: str) -> ImapError:
    return ImapError("BAD", text)


def no(text: str) -> ImapError:
    return ImapError("NO", text)


# -- parsing -------------------------------------------------------------------

def tokenize(segments: list[tuple[str, bytes]]) -> list[Token]:
    """Tokens of a command: ("text", bytes) and ("literal", bytes) pieces.

    An atom keeps a bracketed part whole, spaces and parentheses included
    (``BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]<0.100>`` is one token).
    """
    stack: list[list[Token]] = [[]]
    for kind, data in segments:
        if kind == "literal":
            stack[-1].append(data)
            continue
        text = data.decode("utf-8", "replace")
        i = 0
        while i < len(text):
            char = text[i]
            if char == " ":
                i += 1
            elif char == "(":
                stack.append([])
                i += 1
            elif char == ")":
                if len(stack) == 1:
                    raise bad("Unbalanced parentheses")
                done = stack.pop()
                stack[-1].append(done)
                i += 1
            elif char == '"':
                out, i = [], i + 1
                while True:
                    if i >= len(text):
                        raise bad("Unterminated quoted string")
                    if text[i] == "\\" and i + 1 < len(text):
                        out.append(text[i + 1])
                        i += 2
                    elif text[i] == '"':
                        i += 1
                        break
                    else:
                        out.append(text[i])
                        i += 1
                stack[-1].append("".join(out))
            else:
                start, depth = i, 0
                while i < len(text):
                    char = text[i]
                    if char == "[":
                        depth += 1
                    elif char == "]" and depth:
                        depth -= 1
                    elif not depth and char in ' ()"':
                        break
                    i += 1
                stack[-1].append(text[start:i])
    if len(stack) != 1:
        raise bad("Unbalanced parentheses")
    return stack[0]


def astring(token: Token) -> str:
    if isinstance(token, bytes):
        return token.decode("utf-8", "replace")
    if isinstance(token, str):
        return token
    raise bad("String expected")


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mailbox_out(name: str) -> str:
    return name if _ATOM_OUT.fullmatch(name) else quote(name)


def parse_set(text: Token, highest: int) -> list[tuple[int, int]]:
    """A sequence set ("1:3,7,9:*") as (low, high) ranges; * is highest."""
    if not isinstance(text, str) or not text:
        raise bad("Invalid messageset")
    ranges = []
    for part in text.split(","):
        first, sep, last = part.partition(":")
        try:
            low = highest if first == "*" else int(first)
            high = (highest if last == "*" else int(last)) if sep else low
        except ValueError:
            raise bad(f"Invalid messageset {text}") from None
        if (first != "*" and low < 1) or (sep and last != "*" and high < 1):
            raise bad(f"Invalid messageset {text}")
        ranges.append((min(low, high), max(low, high)))
    return ranges


def in_ranges(number: int, ranges: list[tuple[int, int]]) -> bool:
    return any(low <= number <= high for low, high in ranges)


def compact(numbers: Iterable[int]) -> str:
    """UIDs as a UID set, runs folded: 1,2,3,5 -> 1:3,5."""
    out: list[str] = []
    run: list[int] = []
    for number in sorted(numbers):
        if run and number == run[-1] + 1:
            run.append(number)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}:{run[-1]}")
        run = [number]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}:{run[-1]}")
    return ",".join(out)


def parse_date(text: Token) -> datetime.date:
    """An IMAP date: 1-Feb-1994."""
    try:
        day, month, year = astring(text).split("-")
        return datetime.date(int(year), _MONTHS.index(month.title()) + 1,
                             int(day))
    except (ValueError, ImapError):
        raise bad(f"Invalid date {text!r}") from None


def parse_datetime(text: str) -> datetime.datetime:
    """An IMAP date-time: "17-Jul-1996 02:44:25 -0700"."""
    try:
        date_part, clock, zone = text.strip().split()
        date = parse_date(date_part)
        hour, minute, second = (int(x) for x in clock.split(":"))
        sign = -1 if zone[0] == "-" else 1
        offset = datetime.timedelta(hours=int(zone[1:3]),
                                    minutes=int(zone[3:5])) * sign
        return datetime.datetime(date.year, date.month, date.day, hour,
                                 minute, second,
                                 tzinfo=datetime.timezone(offset))
    except (ValueError, IndexError, ImapError):
        raise bad(f"Invalid date-time {text!r}") from None


def format_datetime(when: datetime.datetime) -> str:
    offset = when.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (f'"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} '
            f'{when:%H:%M:%S} {sign}{minutes // 60:02d}{minutes % 60:02d}"')


def normalize_flag(flag: str) -> str:
    if flag.startswith("\\"):
        for known in SYSTEM_FLAGS + (RECENT,):
            if known.lower() == flag.lower():
                return known
        raise bad(f"Invalid system flag {flag}")
    if not flag or not _TAG.fullmatch(flag):
        raise bad(f"Invalid flag {flag!r}")
    return flag


def flag_list(flags: Iterable[str]) -> str:
    return "(" + " ".join(sorted(flags, key=_flag_order)) + ")"


def _flag_order(flag: str) -> tuple[int, str]:
    known = SYSTEM_FLAGS + (RECENT,)
    return (known.index(flag), "") if flag in known else (len(known), flag)


# -- message sections ---------------------------------------------------------------

def _split(data: bytes) -> tuple[bytes, bytes]:
    """(header with its blank line, body) of a CRLF message."""
    if data.startswith(b"\r\n"):
        return b"\r\n", data[2:]
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return data, b""
    return head + b"\r\n\r\n", body


def _header_lines(header: bytes) -> list[tuple[str, bytes]]:
    """(lower-case name, raw lines with folding and CRLF) per field."""
    fields: list[tuple[str, bytes]] = []
    for line in header.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line + b"\r\n")
        else:
            name = line.split(b":", 1)[0].strip().decode("utf-8", "replace")
            fields.append((name.lower(), line + b"\r\n"))
    return fields


def section_data(data: bytes, section: str, fields: tuple[str, ...]) -> bytes:
    header, body = _split(data)
    if section == "":
        return data
    if section == "HEADER":
        return header
    if section == "TEXT":
        return body
    wanted = {name.lower() for name in fields}
    keep = section == "HEADER.FIELDS"
    return b"".join(raw for name, raw in _header_lines(header)
                    if (name in wanted) == keep) + b"\r\n"


def _decoded(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, email.errors.HeaderParseError):
        return value


@dataclass(frozen=True)
class FetchItem:
    name: str                 # how the response names it
    kind: str                 # UID FLAGS RFC822.SIZE INTERNALDATE SECTION
    section: str = ""         # "", HEADER, TEXT, HEADER.FIELDS(.NOT)
    fields: tuple[str, ...] = ()
    origin: Optional[int] = None
    length: Optional[int] = None
    peek: bool = True


_SIMPLE_ITEMS = ("UID", "FLAGS", "RFC822.SIZE", "INTERNALDATE")
_MACROS = {"FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE")}
_UNSUPPORTED = ("ENVELOPE", "BODY", "BODYSTRUCTURE", "ALL", "FULL",
                "BINARY", "MODSEQ")


def parse_fetch_items(token: Token) -> list[FetchItem]:
    atoms = token if isinstance(token, list) else [token]
    if isinstance(token, str) and token.upper() in _MACROS:
        atoms = list(_MACROS[token.upper()])
    items = []
    for atom in atoms:
        if not isinstance(atom, str) or not atom:
            raise bad("Invalid fetch item")
        upper = atom.upper()
        if upper in _SIMPLE_ITEMS:
            items.append(FetchItem(upper, upper))
        elif upper == "RFC822":
            items.append(FetchItem("RFC822", "SECTION", peek=False))
        elif upper == "RFC822.HEADER":
            items.append(FetchItem("RFC822.HEADER", "SECTION", "HEADER"))
        elif upper == "RFC822.TEXT":
            items.append(FetchItem("RFC822.TEXT", "SECTION", "TEXT",
                                   peek=False))
        else:
            items.append(_section_item(atom))
    return items


def _section_item(atom: str) -> FetchItem:
    match = _SECTION.fullmatch(atom)
    if match is None:
        if atom.upper().split("[")[0].split("<")[0] in _UNSUPPORTED:
            raise bad(f"Fetch item {atom} not implemented by the lab")
        raise bad(f"Invalid fetch item {atom}")
    keyword, spec, origin, length = match.groups()
    spec = spec.strip()
    fields: tuple[str, ...] = ()
    section = spec.upper()
    echo = section
    if section.startswith("HEADER.FIELDS"):
        fields_match = _FIELDS.fullmatch(spec)
        if fields_match is None:
            raise bad(f"Invalid section {spec}")
        section = fields_match.group(1).upper()
        fields = tuple(name.strip('"')
                       for name in fields_match.group(2).split())
        if not fields:
            raise bad(f"Invalid section {spec}")
        echo = f"{section} ({' '.join(fields)})"
    elif section not in ("", "HEADER", "TEXT"):
        raise bad(f"Section {spec} not implemented by the lab")
    name = f"BODY[{echo}]" + (f"<{origin}>" if origin is not None else "")
    return FetchItem(name, "SECTION", section, fields,
                     None if origin is None else int(origin),
                     None if length is None else int(length),
                     peek=keyword.upper() == "BODY.PEEK")


# -- search ---------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    seq: int
    entry: Entry
    recent: bool


Predicate = Callable[[Candidate], bool]

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "UNANSWERED": ("\\Answered", False),
    "DELETED": (DELETED, True), "UNDELETED": (DELETED, False),
    "DRAFT": ("\\Draft", True), "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True), "UNFLAGGED": ("\\Flagged", False),
    "SEEN": (SEEN, True), "UNSEEN": (SEEN, False),
}
_ADDRESS_KEYS = ("BCC", "CC", "FROM", "SUBJECT", "TO")
_DATE_KEYS = ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE")


def _header_has(entry: Entry, name: str, needle: str) -> bool:
    needle = needle.lower()
    for field_name, value in header_fields(entry.message.data):
        if field_name.lower() != name.lower():
            continue
        if not needle or needle in value.lower() \
                or needle in _decoded(value).lower():
            return True
    return False


def _sent_date(entry: Entry) -> Optional[datetime.date]:
    for name, value in header_fields(entry.message.data):
        if name.lower() == "date":
            try:
                return email.utils.parsedate_to_datetime(value).date()
            except (TypeError, ValueError):
                return None
    return None


def _compare(kind: str, date: Optional[datetime.date],
             limit: datetime.date) -> bool:
    if date is None:
        return False
    if kind == "BEFORE":
        return date < limit
    if kind == "ON":
        return date == limit
    return date >= limit


class SearchParser:
    """RFC 3501 6.4.4 search keys -> one predicate."""

    def __init__(self, tokens: list[Token], highest_seq: int,
                 highest_uid: int) -> None:
        self.tokens = tokens
        self.pos = 0
        self.highest_seq = highest_seq
        self.highest_uid = highest_uid

    def parse(self) -> Predicate:
        if (self.tokens and isinstance(self.tokens[0], str)
                and self.tokens[0].upper() == "CHARSET"):
            self.pos = 1
            charset = astring(self._take())
            if charset.upper() not in ("US-ASCII", "UTF-8"):
                raise no("[BADCHARSET (US-ASCII UTF-8)] Unsupported charset")
        keys = []
        while self.pos < len(self.tokens):
            keys.append(self._key())
        if not keys:
            raise bad("Missing search criteria")
        return lambda c: all(key(c) for key in keys)

    def _take(self) -> Token:
        if self.pos >= len(self.tokens):
            raise bad("Missing search argument")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _key(self) -> Predicate:
        token = self._take()
        if isinstance(token, list):
            inner = SearchParser(token, self.highest_seq, self.highest_uid)
            keys = []
            while inner.pos < len(token):
                keys.append(inner._key())
            if not keys:
                raise bad("Empty search list")
            return lambda c: all(key(c) for key in keys)
        if isinstance(token, bytes):
            raise bad("Search key expected")
        key = token.upper()
        if key == "ALL":
            return lambda c: True
        if key in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[key]
            return lambda c: (flag in c.entry.flags) == present
        if key == "RECENT":
            return lambda c: c.recent
        if key == "OLD":
            return lambda c: not c.recent
        if key == "NEW":
            return lambda c: c.recent and SEEN not in c.entry.flags
        if key in ("KEYWORD", "UNKEYWORD"):
            flag = astring(self._take())
            present = key == "KEYWORD"
            return lambda c: (flag in c.entry.flags) == present
        if key in _ADDRESS_KEYS:
            needle = astring(self._take())
            return lambda c: _header_has(c.entry, key, needle)
        if key == "HEADER":
            name, needle = astring(self._take()), astring(self._take())
            return lambda c: _header_has(c.entry, name, needle)
        if key in ("BODY", "TEXT"):
            needle = astring(self._take()).lower().encode("utf-8")
            part = "TEXT" if key == "BODY" else ""
            return lambda c: needle in section_data(
                c.entry.message.data, part, ()).lower()
        if key in _DATE_KEYS:
            limit = parse_date(self._take())
            if key.startswith("SENT"):
                kind = key[4:]
                return lambda c: _compare(kind, _sent_date(c.entry), limit)
            return lambda c: _compare(key, c.entry.internaldate.date(), limit)
        if key in ("LARGER", "SMALLER"):
            try:
                size = int(astring(self._take()))
            except ValueError:
                raise bad("Number expected") from None
            if key == "LARGER":
                return lambda c: c.entry.message.size > size
            return lambda c: c.entry.message.size < size
        if key == "UID":
            ranges = parse_set(self._take(), self.highest_uid)
            return lambda c: in_ranges(c.entry.uid, ranges)
        if key == "NOT":
            inner_key = self._key()
            return lambda c: not inner_key(c)
        if key == "OR":
            left, right = self._key(), self._key()
            return lambda c: left(c) or right(c)
        if re.fullmatch(r"[0-9*:,]+", key):
            ranges = parse_set(key, self.highest_seq)
            return lambda c: in_ranges(c.seq, ranges)
        raise bad(f"Unknown search key {token}")


# -- the session ------------------------------------------------------------------

CommandMethod = Callable[["ImapSession", list, bool], Awaitable[Optional[str]]]


class ImapSession:
    """One client connection."""

    def __init__(self, listener: "ImapListener",
                 reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.listener = listener
        self.variant = listener.variant
        self.store = listener.store
        self.reader = reader
        self.writer = writer
        self.state = NOT_AUTHENTICATED
        self.tls_active = self.variant.tls == TLS_IMPLICIT
        self.user: Optional[str] = None
        self.tag: Optional[str] = None    # of the command being answered
        self.selected: Optional[str] = None  # store name of the folder
        self.readonly = False
        self.view: list[int] = []         # UIDs by sequence number
        self.highest = 0                  # highest UID the client was told of
        self.recent: set[int] = set()     # \Recent for this session
        self._known_flags: dict[int, frozenset[str]] = {}
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._unwatch: Optional[Callable[[], None]] = None
        self._closing = False

    # -- I/O --------------------------------------------------------------

    async def push(self, line: str) -> None:
        """Send one response line (CRLF added), through the REPLY hook."""
        hook = self.listener.hooks.get("REPLY")
        if hook is not None and await hook(self, line):
            return
        await self.push_bytes(line.encode("utf-8") + b"\r\n")

    async def push_bytes(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        """End the session after the current command (LOGOUT, hooks)."""
        self._closing = True

    def abort(self) -> None:
        """Cut the connection at once (lab shutdown)."""
        self._closing = True
        self.writer.transport.abort()

    async def _read_line(self) -> Optional[bytes]:
        """The next line from the client, or None when the session ends."""
        try:
            async with asyncio.timeout(IDLE_TIMEOUT):
                line = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None  # EOF: the client went away
        except asyncio.LimitOverrunError:
            await self.push("* BYE Line too long")
            return None
        except TimeoutError:
            await self.push("* BYE Autologout; idle for too long")
            return None
        if len(line) > MAX_LINE:
            await self.push("* BYE Line too long")
            return None
        return line

    async def _read_command(self) -> Optional[list[tuple[str, bytes]]]:
        """A whole command: its text pieces and literals (sending "+" for
        synchronizing ones), or None when the session ends."""
        line = await self._read_line()
        if line is None:
            return None
        segments: list[tuple[str, bytes]] = []
        while True:
            text = line[:-2] if line.endswith(b"\r\n") else line.rstrip(b"\n")
            match = _LITERAL.search(text)
            if match is None:
                segments.append(("text", text))
                return segments
            segments.append(("text", text[:match.start()]))
            size, plus = int(match.group(1)), bool(match.group(2))
            if size > MAX_LITERAL:
                await self.push("* BYE Literal too big")
                return None
            if not plus:
                await self.push("+ Ready for literal data")
            try:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    data = await self.reader.readexactly(size)
            except (asyncio.IncompleteReadError, TimeoutError):
                return None
            segments.append(("literal", data))
            line = await self._read_line()
            if line is None:
                return None

    # -- session loop -------------------------------------------------------

    async def run(self) -> None:
        try:
            hook = self.listener.hooks.get("CONNECT")
            if hook is None or not await hook(self, None):
                greeting = self._greeting()
                hook = self.listener.hooks.get("GREETING")
                if hook is None or not await hook(self, greeting):
                    await self.push(greeting)
            while not self._closing:
                segments = await self._read_command()
                if segments is None:
                    break
                await self._dispatch(segments)
        except OSError as exc:
            # Resets and TLS errors (ssl.SSLError is an OSError) just end
            # the session; they are the client's business.
            log.debug("IMAP %s session ended: %r", self.variant.name, exc)
        finally:
            self._stop_watching()
            await self._close_transport()

    def _greeting(self) -> str:
        return f"* OK [CAPABILITY {' '.join(self.capabilities())}] {BANNER}"

    async def _dispatch(self, segments: list[tuple[str, bytes]]) -> None:
        first = segments[0][1].decode("utf-8", "replace")
        if not first.strip() and len(segments) == 1:
            return  # a stray empty line
        tag = first.split(" ", 1)[0]
        if not _TAG.fullmatch(tag):
            await self.push("* BAD Error in IMAP command received by server.")
            return
        self.tag = tag
        try:
            tokens = tokenize(segments)
        except ImapError as exc:
            await self.push(f"{tag} {exc.kind} {exc.text}")
            return
        if len(tokens) < 2 or not isinstance(tokens[1], str):
            await self.push(f"{tag} BAD Missing command")
            return
        command, args = tokens[1].upper(), tokens[2:]
        uid = command == "UID"
        if uid:
            if not args or not isinstance(args[0], str):
                await self.push(f"{tag} BAD Missing UID command")
                return
            command, args = f"UID {args[0].upper()}", args[1:]
        hook = (None if command in PSEUDO_COMMANDS
                else self.listener.hooks.get(command))
        if hook is not None and await hook(self, self._arg_text(segments)):
            return
        entry = COMMANDS.get(command)
        needs = REQUIRES.get(command)
        if entry is None or (needs is not None and needs in self.variant.lacks):
            await self.push(f"{tag} BAD Error in IMAP command {command}: "
                            "Unknown command.")
            return
        states, method = entry
        if self.state not in states:
            await self.push(f"{tag} BAD Error in IMAP command {command}: "
                            "not valid in this state.")
            return
        try:
            if self.state == SELECTED and command not in NO_SYNC_BEFORE:
                await self._sync(expunges=command not in SEQUENCE_COMMANDS)
            done = await method(self, args, uid)
            if done is not None:
                await self.push(f"{tag} OK {done}")
        except ImapError as exc:
            await self.push(f"{tag} {exc.kind} {exc.text}")
        except OSError:
            raise  # connection trouble ends the session in run()
        except Exception:  # a lab bug must not look like a dropped link
            log.exception("IMAP %s: %s failed", self.variant.name, command)
            await self.push(f"{tag} NO [SERVERBUG] Internal server error")

    @staticmethod
    def _arg_text(segments: list[tuple[str, bytes]]) -> Optional[str]:
        """The command's arguments as sent (literals inline), for hooks."""
        raw = b""
        for kind, data in segments:
            raw += (b"{%d}\r\n" % len(data) + data) if kind == "literal" \
                else data
        words = raw.decode("utf-8", "replace").split(" ", 2)
        if len(words) > 2 and words[1].upper() == "UID":
            words = words[2].split(" ", 1)
            return words[1] if len(words) > 1 else None
        return words[2] if len(words) > 2 else None

    async def _close_transport(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.writer.wait_closed()
        except (OSError, TimeoutError):
            # The peer reset or never finished the TLS goodbye: cut it.
            self.writer.transport.abort()

    # -- state the faults reach too -------------------------------------------

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1"]
        if self.state == NOT_AUTHENTICATED:
            if self.starttls_offered():
                caps.append("STARTTLS")
            caps.append("LOGINDISABLED" if self._plaintext_refused()
                        else "AUTH=PLAIN")
            caps.append("AUTH=CRAM-MD5")
            oauth = self.listener.oauth
            if oauth is not None and not self._plaintext_refused():
                # Bearer tokens are replayable like passwords: they follow
                # PLAIN's rule (as Dovecot's disable_plaintext_auth does).
                caps += [f"AUTH={m}" for m in oauth.mechanisms]
            caps.append("SASL-IR")
        caps += ["LITERAL+", "ID", "NAMESPACE", "UNSELECT"]
        caps += [c for c in ("IDLE", "UIDPLUS", "MOVE")
                 if c not in self.variant.lacks]
        if self.variant.special_use:
            caps.append("SPECIAL-USE")
        hidden = self.listener.tweaks.capa_hidden
        return [c for c in caps
                if c not in hidden and c.split("=")[0] not in hidden]

    def starttls_offered(self) -> bool:
        return (self.variant.tls == TLS_STARTTLS and not self.tls_active
                and self.state == NOT_AUTHENTICATED)

    def _plaintext_refused(self) -> bool:
        return (self.variant.tls == TLS_STARTTLS and self.variant.logindisabled
                and not self.tls_active)

    def preauthenticate(self, user: str) -> None:
        """Log ``user`` in without a command (a PREAUTH greeting)."""
        self._logged_in(user)

    def deselect(self) -> None:
        self.state = AUTHENTICATED if self.user else NOT_AUTHENTICATED
        self.selected = None
        self.readonly = False
        self.view, self.highest = [], 0
        self.recent = set()
        self._known_flags = {}

    async def upgrade_tls(self) -> bool:
        """The TLS handshake after a STARTTLS go-ahead; False if it failed
        (the connection is then cut)."""
        # Plaintext pipelined behind STARTTLS must not be taken as if it
        # came over TLS (command injection, CVE-2011-0411).  StreamReader
        # has no public way to drop its buffer, hence the private access.
        buffered = getattr(self.reader, "_buffer", None)
        if buffered:
            buffered.clear()
        assert self.listener.tls_context is not None
        try:
            await self.writer.start_tls(self.listener.tls_context)
        except (OSError, ConnectionError) as exc:
            log.debug("IMAP %s: STARTTLS handshake failed: %r",
                      self.variant.name, exc)
            self.abort()
            return False
        self.tls_active = True
        return True

    def _logged_in(self, user: str) -> None:
        self.user = user
        self.state = AUTHENTICATED
        self._stop_watching()
        self._unwatch = self.store.watch(self._on_change)

    def _on_change(self, user: str, folder: str) -> None:
        # Runs in whichever thread changed the store.
        if user != self.user:
            return
        try:
            self._loop.call_soon_threadsafe(self._changed.set)
        except RuntimeError:
            pass  # the lab's loop is already closed

    def _stop_watching(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    # -- folders --------------------------------------------------------------

    def _names(self) -> dict[str, str]:
        """{store folder name: the name this variant shows}."""
        assert self.user is not None
        renames = {} if self.variant.special_use else NO_SPECIAL_USE_NAMES
        return {name: renames.get(name, name)
                for name, _special in self.store.folders(self.user)}

    def _folder(self, token: Token) -> str:
        """The store name of the folder a client named, or NO."""
        name = astring(token)
        if name.upper() == INBOX:
            return INBOX
        for stored, shown in self._names().items():
            if shown == name:
                return stored
        raise no(f"[NONEXISTENT] Mailbox doesn't exist: {name}")

    def _target(self, token: Token) -> str:
        try:
            return self._folder(token)
        except ImapError:
            raise no(f"[TRYCREATE] Mailbox doesn't exist: {astring(token)}") \
                from None

    # -- keeping the client's view in step with the store -------------------------

    def _sync_lines(self, expunges: bool) -> list[str]:
        if self.selected is None or self.user is None:
            return []
        try:
            entries = self.store.entries(self.user, self.selected)
        except UnknownFolder:
            return []
        current = {e.uid: e for e in entries}
        lines = []
        if expunges:
            i = 0
            while i < len(self.view):
                uid = self.view[i]
                if uid in current:
                    i += 1
                    continue
                lines.append(f"* {i + 1} EXPUNGE")
                del self.view[i]
                self._known_flags.pop(uid, None)
                self.recent.discard(uid)
        new = [e for e in entries if e.uid > self.highest]
        if new:
            self.view.extend(e.uid for e in new)
            self.highest = new[-1].uid
            for e in new:
                self._known_flags[e.uid] = e.flags
            self._claim_recent(new)
            lines.append(f"* {len(self.view)} EXISTS")
            lines.append(f"* {len(self.recent)} RECENT")
        for seq, uid in enumerate(self.view, 1):
            entry = current.get(uid)
            if entry is not None and entry.flags != self._known_flags.get(uid):
                self._known_flags[uid] = entry.flags
                lines.append(f"* {seq} FETCH (UID {uid} FLAGS "
                             f"{flag_list(self._flags(entry))})")
        return lines

    def _claim_recent(self, entries: list[Entry]) -> None:
        if self.readonly:
            # EXAMINE changes nothing, \Recent included (RFC 3501 6.3.2).
            self.recent |= {e.uid for e in entries if e.recent}
        else:
            assert self.user is not None and self.selected is not None
            self.recent |= self.store.claim_recent(self.user, self.selected)

    async def _sync(self, expunges: bool) -> None:
        for line in self._sync_lines(expunges):
            await self.push(line)

    def _flags(self, entry: Entry) -> set[str]:
        flags = set(entry.flags)
        if entry.uid in self.recent:
            flags.add(RECENT)
        return flags

    def _chosen(self, token: Token, uid: bool) -> list[tuple[int, int]]:
        """(sequence number, UID) of the messages a set names."""
        if uid:
            ranges = parse_set(token, self.view[-1] if self.view else 0)
            return [(seq, u) for seq, u in enumerate(self.view, 1)
                    if in_ranges(u, ranges)]
        ranges = parse_set(token, len(self.view))
        if any(high > len(self.view) for _low, high in ranges):
            raise bad("Invalid messageset")
        return [(seq, u) for seq, u in enumerate(self.view, 1)
                if in_ranges(seq, ranges)]

    def _entries(self) -> dict[int, Entry]:
        assert self.user is not None and self.selected is not None
        return {e.uid: e for e in self.store.entries(self.user, self.selected)}

    # -- any state ------------------------------------------------------------------

    async def cmd_capability(self, args: list, uid: bool) -> str:
        await self.push(f"* CAPABILITY {' '.join(self.capabilities())}")
        return "Capability completed."

    async def cmd_noop(self, args: list, uid: bool) -> str:
        return "NOOP completed."

    async def cmd_logout(self, args: list, uid: bool) -> None:
        self.state = LOGOUT
        await self.push("* BYE Logging out")
        await self.push(f"{self.tag} OK Logout completed.")
        self.close()

    async def cmd_id(self, args: list, uid: bool) -> str:
        await self.push(f'* ID ("name" "{IMPLEMENTATION}" "vendor" '
                        '"mailops")')
        return "ID completed."

    # -- not authenticated ----------------------------------------------------------

    async def cmd_starttls(self, args: list, uid: bool) -> None:
        if self.tls_active:
            raise bad("TLS is already active.")
        if not self.starttls_offered() or self.listener.tls_context is None:
            raise no("[UNAVAILABLE] STARTTLS not available")
        await self.push(f"{self.tag} OK Begin TLS negotiation now.")
        await self.upgrade_tls()

    async def cmd_login(self, args: list, uid: bool) -> str:
        if len(args) != 2:
            raise bad("Error in IMAP command LOGIN: invalid arguments")
        if self._plaintext_refused():
            raise no("[PRIVACYREQUIRED] Plaintext authentication disallowed "
                     "on non-secure (SSL/TLS) connections.")
        user, password = astring(args[0]), astring(args[1])
        if not self.store.check_password(user, password):
            raise no("[AUTHENTICATIONFAILED] Authentication failed.")
        return self._welcome(user)

    def _welcome(self, user: str) -> str:
        self._logged_in(user)
        return f"[CAPABILITY {' '.join(self.capabilities())}] Logged in"

    async def cmd_authenticate(self, args: list, uid: bool) -> str:
        if not args or len(args) > 2 or not isinstance(args[0], str):
            raise bad("Error in IMAP command AUTHENTICATE: invalid arguments")
        mechanism = args[0].upper()
        initial = astring(args[1]) if len(args) == 2 else None
        if mechanism == "PLAIN":
            if self._plaintext_refused():
                raise no("[PRIVACYREQUIRED] Plaintext authentication "
                         "disallowed on non-secure (SSL/TLS) connections.")
            response = await self._sasl_response("", initial)
            user = self._check_plain(response)
        elif mechanism == "CRAM-MD5":
            if initial is not None:
                raise bad("CRAM-MD5 takes no initial response")
            challenge = (f"<{secrets.randbelow(10**10)}.{int(time.time())}"
                         f".{os.getpid()}@{self.listener.hostname}>").encode()
            response = await self._sasl_response(
                base64.b64encode(challenge).decode("ascii"), None)
            user = self._check_cram(challenge, response)
        elif (self.listener.oauth is not None
              and mechanism in self.listener.oauth.mechanisms):
            if self._plaintext_refused():
                raise no("[PRIVACYREQUIRED] Plaintext authentication "
                         "disallowed on non-secure (SSL/TLS) connections.")
            return await self._oauth(mechanism, initial)
        else:
            raise no("Unsupported authentication mechanism.")
        if user is None or self.listener.tweaks.auth_fails:
            raise no("[AUTHENTICATIONFAILED] Authentication failed.")
        return self._welcome(user)

    async def _sasl_response(self, challenge: str,
                             initial: Optional[str]) -> bytes:
        if initial is None:
            await self.push(f"+ {challenge}")
            line = await self._read_line()
            if line is None:
                self.close()
                raise bad("Connection lost during authentication")
            text = line.strip().decode("ascii", "replace")
        else:
            text = "" if initial == "=" else initial
        if text == "*":
            raise bad("Authentication aborted by client.")
        try:
            return base64.b64decode(text.encode("ascii", "replace"),
                                    validate=True)
        except (binascii.Error, ValueError):
            raise bad("Invalid base64 data in continued response") from None

    async def _oauth(self, mechanism: str, initial: Optional[str]) -> str:
        oauth = self.listener.oauth
        assert oauth is not None
        tweaks = self.listener.tweaks
        first = (None if initial is None
                 else await self._sasl_response("", initial))

        async def ask(text: str) -> Optional[bytes]:
            # "*" and bad base64 end the command with BAD right here.
            return await self._sasl_response(text, None)

        outcome = await oauth.authenticate(
            mechanism, first, ask,
            lambda user: self.store.password(user) is not None,
            fails=tweaks.auth_fails, challenge=tweaks.oauth_challenge)
        if outcome.unexpected:
            raise bad("Invalid response to the OAuth error challenge")
        if outcome.user is not None:
            return self._welcome(outcome.user)
        if tweaks.oauth_echo and outcome.token:
            raise no("[AUTHENTICATIONFAILED] Authentication failed: token "
                     f"{outcome.token} rejected")
        raise no("[AUTHENTICATIONFAILED] Authentication failed.")

    def _check_plain(self, response: bytes) -> Optional[str]:
        parts = response.split(b"\0")
        if len(parts) != 3:
            raise bad("Invalid PLAIN response")
        authzid, authcid, password = (p.decode("utf-8", "replace")
                                      for p in parts)
        if authzid and authzid != authcid:
            return None
        return authcid if self.store.check_password(authcid, password) \
            else None

    def _check_cram(self, challenge: bytes, response: bytes) -> Optional[str]:
        login, _sep, digest = response.rpartition(b" ")
        user = login.decode("utf-8", "replace")
        password = self.store.password(user)
        if password is None:
            return None
        expected = hmac.new(password.encode(), challenge, "md5").hexdigest()
        return user if hmac.compare_digest(expected.encode(),
                                           digest.lower()) else None

    # -- authenticated --------------------------------------------------------------

    async def cmd_select(self, args: list, uid: bool,
                         readonly: bool = False) -> str:
        if len(args) != 1:
            raise bad("Error in IMAP command SELECT: invalid arguments")
        self.deselect()
        folder = self._folder(args[0])
        assert self.user is not None
        info, entries = self.store.snapshot(self.user, folder)
        self.state, self.selected, self.readonly = SELECTED, folder, readonly
        self.view = [e.uid for e in entries]
        self.highest = self.view[-1] if self.view else 0
        self._known_flags = {e.uid: e.flags for e in entries}
        self._changed.clear()
        self._claim_recent(entries)
        keywords = sorted({f for e in entries for f in e.flags
                           if not f.startswith("\\")})
        flags = " ".join(SYSTEM_FLAGS + tuple(keywords))
        permanent = "" if readonly else " ".join(SYSTEM_FLAGS + ("\\*",))
        lines = [f"* FLAGS ({flags})",
                 f"* OK [PERMANENTFLAGS ({permanent})] Flags permitted.",
                 f"* {len(self.view)} EXISTS",
                 f"* {len(self.recent)} RECENT"]
        unseen = [seq for seq, e in enumerate(entries, 1)
                  if SEEN not in e.flags]
        if unseen:
            lines.append(f"* OK [UNSEEN {unseen[0]}] First unseen.")
        lines += [f"* OK [UIDVALIDITY {info.uidvalidity}] UIDs valid",
                  f"* OK [UIDNEXT {info.uidnext}] Predicted next UID"]
        for line in lines:
            await self.push(line)
        mode = "READ-ONLY" if readonly else "READ-WRITE"
        verb = "Examine" if readonly else "Select"
        return f"[{mode}] {verb} completed."

    async def cmd_examine(self, args: list, uid: bool) -> str:
        return await self.cmd_select(args, uid, readonly=True)

    async def cmd_list(self, args: list, uid: bool,
                       verb: str = "LIST") -> str:
        if len(args) != 2 or isinstance(args[0], list):
            raise bad(f"Error in IMAP command {verb}: invalid arguments")
        reference, pattern = astring(args[0]), astring(args[1])
        if not pattern:
            await self.push(f'* {verb} (\\Noselect) "{DELIMITER}" ""')
            return f"{verb.title()} completed."
        regex = "".join(".*" if c == "*" else f"[^{DELIMITER}]*" if c == "%"
                        else re.escape(c) for c in reference + pattern)
        assert self.user is not None
        specials = dict(self.store.folders(self.user))
        for stored, shown in self._names().items():
            if stored == INBOX:
                matched = re.fullmatch(regex, shown, re.IGNORECASE)
            else:
                matched = re.fullmatch(regex, shown)
            if not matched:
                continue
            attrs = ["\\HasNoChildren"]
            special = specials.get(stored)
            if self.variant.special_use and special:
                attrs.append(special)
            await self.push(f'* {verb} ({" ".join(attrs)}) "{DELIMITER}" '
                            f"{mailbox_out(shown)}")
        return f"{verb.title()} completed."

    async def cmd_lsub(self, args: list, uid: bool) -> str:
        return await self.cmd_list(args, uid, verb="LSUB")

    async def cmd_status(self, args: list, uid: bool) -> str:
        if len(args) != 2 or not isinstance(args[1], list) or not args[1]:
            raise bad("Error in IMAP command STATUS: invalid arguments")
        folder = self._folder(args[0])
        assert self.user is not None
        info = self.store.folder_info(self.user, folder)
        values = {"MESSAGES": info.messages, "RECENT": info.recent,
                  "UIDNEXT": info.uidnext, "UIDVALIDITY": info.uidvalidity,
                  "UNSEEN": info.unseen}
        out = []
        for item in args[1]:
            name = astring(item).upper()
            if name not in values:
                raise bad(f"Unknown STATUS item {name}")
            out.append(f"{name} {values[name]}")
        await self.push(f"* STATUS {mailbox_out(self._names()[folder])} "
                        f"({' '.join(out)})")
        return "Status completed."

    async def cmd_namespace(self, args: list, uid: bool) -> str:
        await self.push(f'* NAMESPACE (("" "{DELIMITER}")) NIL NIL')
        return "Namespace completed."

    async def cmd_append(self, args: list, uid: bool) -> str:
        if len(args) < 2:
            raise bad("Error in IMAP command APPEND: invalid arguments")
        folder = self._target(args[0])
        flags: list[str] = []
        when = None
        rest = args[1:]
        if isinstance(rest[0], list):
            flags = [normalize_flag(astring(f)) for f in rest[0]]
            rest = rest[1:]
        if len(rest) == 2 and isinstance(rest[0], str):
            when = parse_datetime(rest[0])
            rest = rest[1:]
        if len(rest) != 1 or isinstance(rest[0], list):
            raise bad("Error in IMAP command APPEND: invalid arguments")
        data = rest[0] if isinstance(rest[0], bytes) \
            else rest[0].encode("utf-8")
        assert self.user is not None
        validity, new_uid = self.store.append(
            self.user, folder, data, internaldate=when,
            flags=[f for f in flags if f != RECENT])
        if folder == self.selected:
            await self._sync(expunges=False)
        if "UIDPLUS" in self.variant.lacks:
            return "Append completed."
        return f"[APPENDUID {validity} {new_uid}] Append completed."

    async def cmd_idle(self, args: list, uid: bool) -> Optional[str]:
        if args:
            raise bad("Error in IMAP command IDLE: no arguments expected")
        tweaks = self.listener.tweaks
        pushes = self.variant.idle_push and tweaks.idle_push
        # Cleared before this sync: a change after it sets the event again.
        self._changed.clear()
        await self._sync(expunges=True)
        await self.push("+ idling")
        done = asyncio.ensure_future(self._read_line())
        changed: Optional[asyncio.Future[Any]] = None
        try:
            while not done.done():
                waits: set[asyncio.Future[Any]] = {done}
                if pushes:
                    changed = asyncio.ensure_future(self._changed.wait())
                    waits.add(changed)
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if done.done():
                    break
                self._changed.clear()
                if tweaks.idle_delay > 0:
                    await asyncio.wait({done}, timeout=tweaks.idle_delay)
                await self._sync(expunges=True)
        finally:
            for future in (done, changed):
                if future is not None and not future.done():
                    future.cancel()
        line = done.result()
        if line is None:
            self.close()
            return None
        if line.strip().upper() != b"DONE":
            raise bad("Expected DONE.")
        if not tweaks.idle_done_answered:
            while await self.reader.read(4096):
                pass
            self.close()
            return None
        return "Idle completed."

    # -- selected ---------------------------------------------------------------------

    async def cmd_check(self, args: list, uid: bool) -> str:
        return "Check completed."

    async def cmd_close(self, args: list, uid: bool) -> str:
        if not self.readonly:
            assert self.user is not None and self.selected is not None
            self.store.expunge(self.user, self.selected)
        self.deselect()
        return "Close completed."

    async def cmd_unselect(self, args: list, uid: bool) -> str:
        self.deselect()
        return "Unselect completed."

    async def cmd_search(self, args: list, uid: bool) -> str:
        parser = SearchParser(args, len(self.view),
                              self.view[-1] if self.view else 0)
        predicate = parser.parse()
        entries = self._entries()
        found = []
        for seq, message_uid in enumerate(self.view, 1):
            entry = entries.get(message_uid)
            if entry is not None and predicate(
                    Candidate(seq, entry, message_uid in self.recent)):
                found.append(message_uid if uid else seq)
        await self.push(" ".join(["* SEARCH"] + [str(n) for n in found]))
        return "Search completed."

    async def cmd_fetch(self, args: list, uid: bool) -> str:
        if len(args) != 2:
            raise bad("Error in IMAP command FETCH: invalid arguments")
        chosen = self._chosen(args[0], uid)
        items = parse_fetch_items(args[1])
        if uid and not any(item.kind == "UID" for item in items):
            items.insert(0, FetchItem("UID", "UID"))
        entries = self._entries()
        for seq, message_uid in chosen:
            entry = entries.get(message_uid)
            if entry is None:
                continue  # expunged by another session, not yet reported
            await self.push_bytes(self._fetch_response(seq, entry, items))
        return "Fetch completed."

    def _fetch_response(self, seq: int, entry: Entry,
                        items: list[FetchItem]) -> bytes:
        if (not self.readonly and SEEN not in entry.flags
                and any(i.kind == "SECTION" and not i.peek for i in items)):
            assert self.user is not None and self.selected is not None
            flags = self.store.set_flags(self.user, self.selected,
                                         [entry.uid], "+", [SEEN])
            entry = Entry(entry.uid, entry.message,
                          flags.get(entry.uid, entry.flags | {SEEN}),
                          entry.internaldate, entry.recent)
            self._known_flags[entry.uid] = entry.flags
            if not any(i.kind == "FLAGS" for i in items):
                items = items + [FetchItem("FLAGS", "FLAGS")]
        size_of = self.listener.tweaks.literal_size
        parts = []
        for item in items:
            if item.kind == "UID":
                parts.append(b"UID %d" % entry.uid)
            elif item.kind == "FLAGS":
                parts.append(b"FLAGS " + flag_list(self._flags(entry)).encode())
            elif item.kind == "RFC822.SIZE":
                parts.append(b"RFC822.SIZE %d" % entry.message.size)
            elif item.kind == "INTERNALDATE":
                parts.append(b"INTERNALDATE "
                             + format_datetime(entry.internaldate).encode())
            else:
                data = section_data(entry.message.data, item.section,
                                    item.fields)
                if item.origin is not None:
                    end = (None if item.length is None
                           else item.origin + item.length)
                    data = data[item.origin:end]
                announced = len(data) if size_of is None \
                    else max(0, size_of(len(data)))
                parts.append(item.name.encode("utf-8")
                             + b" {%d}\r\n" % announced + data)
        return b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n"

    async def cmd_store(self, args: list, uid: bool) -> str:
        if len(args) < 3 or not isinstance(args[1], str):
            raise bad("Error in IMAP command STORE: invalid arguments")
        chosen = self._chosen(args[0], uid)
        action = args[1].upper()
        silent = action.endswith(".SILENT")
        action = action[:-len(".SILENT")] if silent else action
        modes = {"FLAGS": "", "+FLAGS": "+", "-FLAGS": "-"}
        if action not in modes:
            raise bad(f"Invalid STORE item {args[1]}")
        raw = args[2] if isinstance(args[2], list) and len(args) == 3 \
            else args[2:]
        flags = [normalize_flag(astring(f)) for f in raw]
        if self.readonly:
            raise no("[READ-ONLY] Mailbox is read-only.")
        assert self.user is not None and self.selected is not None
        result = self.store.set_flags(
            self.user, self.selected, [u for _seq, u in chosen],
            modes[action], [f for f in flags if f != RECENT])
        entries = self._entries()
        for seq, message_uid in chosen:
            if message_uid not in result:
                continue
            self._known_flags[message_uid] = result[message_uid]
            if silent:
                continue
            entry = entries.get(message_uid)
            shown = self._flags(entry) if entry else set(result[message_uid])
            prefix = f"UID {message_uid} " if uid else ""
            await self.push(f"* {seq} FETCH ({prefix}FLAGS "
                            f"{flag_list(shown)})")
        return "Store completed."

    async def cmd_expunge(self, args: list, uid: bool) -> str:
        if self.readonly:
            raise no("[READ-ONLY] Mailbox is read-only.")
        only = None
        if uid:
            if len(args) != 1:
                raise bad("Error in IMAP command UID EXPUNGE: invalid "
                          "arguments")
            only = [u for _seq, u in self._chosen(args[0], True)]
        elif args:
            raise bad("Error in IMAP command EXPUNGE: no arguments expected")
        assert self.user is not None and self.selected is not None
        self.store.expunge(self.user, self.selected, only)
        await self._sync(expunges=True)
        return "Expunge completed."

    async def cmd_copy(self, args: list, uid: bool,
                       move: bool = False) -> str:
        verb = "MOVE" if move else "COPY"
        if len(args) != 2:
            raise bad(f"Error in IMAP command {verb}: invalid arguments")
        chosen = self._chosen(args[0], uid)
        target = self._target(args[1])
        if move and self.readonly:
            raise no("[READ-ONLY] Mailbox is read-only.")
        assert self.user is not None and self.selected is not None
        pairs = self.store.copy(self.user, self.selected,
                                [u for _seq, u in chosen], target, move=move)
        code = ""
        if pairs and "UIDPLUS" not in self.variant.lacks:
            validity = self.store.folder_info(self.user, target).uidvalidity
            code = (f"[COPYUID {validity} {compact(p[0] for p in pairs)} "
                    f"{compact(p[1] for p in pairs)}] ")
        if not move:
            return f"{code}Copy completed."
        if code:
            await self.push(f"* OK {code}Moved UIDs.")
        await self._sync(expunges=True)
        return "Move completed."

    async def cmd_move(self, args: list, uid: bool) -> str:
        return await self.cmd_copy(args, uid, move=True)


_ANY = (NOT_AUTHENTICATED, AUTHENTICATED, SELECTED)
_AUTH = (AUTHENTICATED, SELECTED)
_SEL = (SELECTED,)
COMMANDS: dict[str, tuple[tuple[str, ...], CommandMethod]] = {
    "CAPABILITY": (_ANY, ImapSession.cmd_capability),
    "NOOP": (_ANY, ImapSession.cmd_noop),
    "LOGOUT": (_ANY, ImapSession.cmd_logout),
    "ID": (_ANY, ImapSession.cmd_id),
    "STARTTLS": ((NOT_AUTHENTICATED,), ImapSession.cmd_starttls),
    "LOGIN": ((NOT_AUTHENTICATED,), ImapSession.cmd_login),
    "AUTHENTICATE": ((NOT_AUTHENTICATED,), ImapSession.cmd_authenticate),
    "SELECT": (_AUTH, ImapSession.cmd_select),
    "EXAMINE": (_AUTH, ImapSession.cmd_examine),
    "LIST": (_AUTH, ImapSession.cmd_list),
    "LSUB": (_AUTH, ImapSession.cmd_lsub),
    "STATUS": (_AUTH, ImapSession.cmd_status),
    "NAMESPACE": (_AUTH, ImapSession.cmd_namespace),
    "APPEND": (_AUTH, ImapSession.cmd_append),
    "IDLE": (_AUTH, ImapSession.cmd_idle),
    "CHECK": (_SEL, ImapSession.cmd_check),
    "CLOSE": (_SEL, ImapSession.cmd_close),
    "UNSELECT": (_SEL, ImapSession.cmd_unselect),
    "SEARCH": (_SEL, ImapSession.cmd_search),
    "FETCH": (_SEL, ImapSession.cmd_fetch),
    "STORE": (_SEL, ImapSession.cmd_store),
    "COPY": (_SEL, ImapSession.cmd_copy),
    "MOVE": (_SEL, ImapSession.cmd_move),
    "EXPUNGE": (_SEL, ImapSession.cmd_expunge),
    "UID SEARCH": (_SEL, ImapSession.cmd_search),
    "UID FETCH": (_SEL, ImapSession.cmd_fetch),
    "UID STORE": (_SEL, ImapSession.cmd_store),
    "UID COPY": (_SEL, ImapSession.cmd_copy),
    "UID MOVE": (_SEL, ImapSession.cmd_move),
    "UID EXPUNGE": (_SEL, ImapSession.cmd_expunge),
}
"""{COMMAND: (states it is valid in, implementation)}; UID commands are
keyed "UID FETCH" etc., which is also how hooks name them."""

# A command a variant may lack, by the capability that brings it.
REQUIRES = {"IDLE": "IDLE", "UID EXPUNGE": "UIDPLUS", "MOVE": "MOVE",
            "UID MOVE": "MOVE"}
# Commands that name messages by sequence number: no EXPUNGE may be
# reported before them (the client's numbers would shift under it).
SEQUENCE_COMMANDS = frozenset(("FETCH", "STORE", "SEARCH", "COPY", "MOVE"))
# Commands that replace or drop the view: nothing to report before them.
NO_SYNC_BEFORE = frozenset(("SELECT", "EXAMINE", "CLOSE", "UNSELECT",
                            "LOGOUT"))


class ImapListener:
    """One IMAP variant: a listening socket plus its live sessions."""

    def __init__(self, variant: Variant, *, store: MailStore,
                 certs: LabCerts, hooks: Optional[Hooks] = None,
                 hostname: Optional[str] = None,
                 tweaks: Optional[Tweaks] = None,
                 oauth: Optional["OAuthServer"] = None) -> None:
        self.variant = variant
        self.store = store
        self.hooks = dict(hooks or {})
        self.tweaks = tweaks or Tweaks()
        self.oauth = oauth
        self.hostname = hostname or socket.gethostname()
        self.tls_context: Optional[ssl.SSLContext] = (
            certs.server_context(variant.cert)
            if variant.tls in (TLS_STARTTLS, TLS_IMPLICIT) else None)
        self.sessions: dict[ImapSession, asyncio.Task[None]] = {}
        self.port: Optional[int] = None
        self._server: Optional[asyncio.AbstractServer] = None

    async def start(self, host: str) -> int:
        implicit = (self.tls_context if self.variant.tls == TLS_IMPLICIT
                    else None)
        self._server = await asyncio.start_server(
            self._on_client, host, 0, ssl=implicit, limit=MAX_LINE * 2)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def _on_client(self, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        # Our own task, not start_server's (see Pop3Listener._on_client).
        session = ImapSession(self, reader, writer)
        task = asyncio.get_running_loop().create_task(
            session.run(), name=f"imap {self.variant.name} session")
        self.sessions[session] = task
        task.add_done_callback(lambda _: self.sessions.pop(session, None))

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        sessions = list(self.sessions.items())
        for session, task in sessions:
            session.abort()
            task.cancel()
        if sessions:
            await asyncio.gather(*(t for _session, t in sessions),
                                 return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
