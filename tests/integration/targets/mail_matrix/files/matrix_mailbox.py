# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Count and delete the test mails of one matrix run in the mail sink mailbox.

The smtp_check cells with send_mail=true deliver into one lab mailbox, with the run's marker in
the subject. This waits until that mailbox holds as many of them as the run sent (or the wait is
over), deletes them, and also deletes matrix mails older than an hour (runs that were killed).
Mail without the matrix subject is never touched.

    python3 matrix_mailbox.py --host 127.0.0.1 --port 995 --ca-path ca.pem --user rt04 \
        --marker 'mailops.health matrix 20260101T000000-123456' --expect 12 --wait 30 < password

Prints {"found": N, "deleted": N, "stale_deleted": N, "seconds": S} as JSON.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import argparse
import json
import poplib
import ssl
import sys
import time
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime

PREFIX = 'mailops.health matrix '
STALE_AFTER = 3600


def scan(conn, marker, now):
    """Message numbers of this run's mails, and of stale matrix mails."""
    mine, stale = [], []
    count = len(conn.list()[1])
    for number in range(1, count + 1):
        headers = BytesHeaderParser().parsebytes(b'\r\n'.join(conn.top(number, 0)[1]) + b'\r\n\r\n')
        subject = str(headers.get('Subject', ''))
        if marker in subject:
            mine.append(number)
        elif subject.startswith(PREFIX):
            try:
                sent = parsedate_to_datetime(str(headers.get('Date', ''))).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                continue
            if now - sent > STALE_AFTER:
                stale.append(number)
    return mine, stale


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--host', required=True)
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca-path', required=True)
    parser.add_argument('--user', required=True)
    parser.add_argument('--marker', required=True)
    parser.add_argument('--expect', type=int, required=True)
    parser.add_argument('--wait', type=float, default=30)
    args = parser.parse_args()
    password = sys.stdin.readline().rstrip('\n')
    context = ssl.create_default_context(cafile=args.ca_path)
    start = time.monotonic()
    while True:
        conn = poplib.POP3_SSL(args.host, args.port, context=context, timeout=10)
        try:
            conn.user(args.user)
            conn.pass_(password)
            mine, stale = scan(conn, args.marker, time.time())
            done = len(mine) >= args.expect or time.monotonic() - start > args.wait
            if done:
                for number in mine + stale:
                    conn.dele(number)
        finally:
            conn.quit()
        if done:
            break
        time.sleep(0.5)
    json.dump({'found': len(mine), 'deleted': len(mine) + len(stale), 'stale_deleted': len(stale),
               'seconds': round(time.monotonic() - start, 1)}, sys.stdout)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
