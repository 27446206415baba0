"""Watch Maildir new/ directories with inotify and report every mail that lands, as JSON lines.

    python -m bench.maildir_watch DIR [DIR ...]

Runs as its own process (no GIL shared with the probes being timed). DIR is a Maildir's new/
directory seen from the host, e.g. /proc/<mailbox container pid>/root/var/vmail/rt06/Maildir/new
(the container's filesystem; the container shares the host's kernel clock). For each file that
appears (IN_MOVED_TO: Dovecot writes into tmp/ and renames into new/; IN_CREATE for a link) it
prints one line:

    {"dir": ..., "name": ..., "event_ns": <time.time_ns() when the event was read>,
     "ctime_ns": <the file's ctime: the kernel's timestamp of the rename>, "token": <X-Mailops-Roundtrip or null>,
     "moved": <read from cur/>, "token_in_body": <the token came from the body>}

The token is read from the header block; when the header block carries none, from the first
64 KiB of the body: a bounce (DSN, multipart/report) returns the probe's headers, with their
`X-Mailops-Roundtrip: <token>` line, in its text/rfc822-headers (or message/rfc822) part, so
a DSN is reported under the token of the mail it is about, with token_in_body true.

The landing moment lies between ctime_ns (the kernel stamps it at the rename, with the coarse
clock: at most one tick, 4 ms at HZ=250, early) and event_ns (read by this process: late by its
wake-up latency). The file is read at once, before a probe can delete it; if an IMAP session
already moved it into cur/, the token is read there, ctime_ns is null and moved true (the
caller falls back to event_ns); if it is gone altogether, ctime_ns and token are null. Prints {"ready": true} once every watch is in place.
"""

import ctypes
import ctypes.util
import json
import os
import re
import select
import struct
import sys
import time

IN_CREATE = 0x00000100
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct('iIII')
_TOKEN = re.compile(rb'^X-Mailops-Roundtrip:\s*([0-9a-f]{32})\s*$', re.MULTILINE | re.IGNORECASE)


def _libc():
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    return libc


def read_token(path):
    """(ctime_ns, token, moved, token_in_body) of a mail file. When it is already gone from new/ (an IMAP
    session that has the folder selected moves new mail into cur/ as it syncs), the token is read
    from cur/<name>:2,<flags>, but that rename stamped a later ctime: ctime_ns is None then."""
    try:
        with open(path, 'rb') as f:
            ctime_ns = os.fstat(f.fileno()).st_ctime_ns
            head = f.read(64 * 1024)
        moved = False
    except OSError:
        ctime_ns, head, moved = None, None, True
        cur = os.path.join(os.path.dirname(os.path.dirname(path)), 'cur')
        prefix = os.path.basename(path) + ':'
        try:
            names = [n for n in os.listdir(cur) if n.startswith(prefix)]
            if names:
                with open(os.path.join(cur, names[0]), 'rb') as f:
                    head = f.read(64 * 1024)
        except OSError:
            pass
        if head is None:
            return None, None, True, False
    text = head.replace(b'\r\n', b'\n')
    match = _TOKEN.search(text.split(b'\n\n', 1)[0])
    in_body = False
    if match is None:
        # A DSN about the probe's mail: the token is in the returned headers (body part).
        match = _TOKEN.search(text)
        in_body = match is not None
    return ctime_ns, match.group(1).decode('ascii') if match else None, moved, in_body


def watch(dirs, out=sys.stdout):
    libc = _libc()
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), 'inotify_init1 failed')
    wds = {}
    for d in dirs:
        wd = libc.inotify_add_watch(fd, os.fsencode(d), IN_MOVED_TO | IN_CREATE)
        if wd < 0:
            raise OSError(ctypes.get_errno(), 'inotify_add_watch failed: %s' % d)
        wds[wd] = d
    out.write(json.dumps({'ready': True, 'dirs': dirs}) + '\n')
    out.flush()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.register(sys.stdin.fileno(), select.POLLIN | select.POLLHUP)
    while True:
        for fileno, _mask in poller.poll():
            if fileno != fd:
                return  # stdin closed or written to: the parent wants us gone
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            event_ns = time.time_ns()
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size:offset + _EVENT.size + length].rstrip(b'\0').decode('utf-8', 'replace')
                offset += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    out.write(json.dumps({'overflow': True, 'event_ns': event_ns}) + '\n')
                    continue
                d = wds.get(wd)
                if d is None or not name:
                    continue
                ctime_ns, token, moved, in_body = read_token(os.path.join(d, name))
                out.write(json.dumps({'dir': d, 'name': name, 'event_ns': event_ns, 'ctime_ns': ctime_ns,
                                      'token': token, 'moved': moved, 'token_in_body': in_body}) + '\n')
            out.flush()


if __name__ == '__main__':
    try:
        watch(sys.argv[1:])
    except KeyboardInterrupt:
        pass
