# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a mail's header says about its trip: the hops of its Received headers (hops,
hops_summary), its Authentication-Results and Received-SPF headers (authentication_results,
verdicts), and, for a bounce, its delivery status (delivery_status, RFC 3464).

headers is what a mailbox hands over: the raw header lines (str or bytes, folded lines included,
one or several lines per item), the header as one str or bytes, or an email.message.Message.
A server the probe does not control wrote these bytes: nothing here raises, what cannot be read
is None, and no mail can make a result large: only the topmost MAX_FIELDS fields of a kind are
read (the receiving side prepends its own above what the sender wrote), each up to MAX_VALUE
characters, and every string in a result is cut at MAX_STRING.

Stdlib only, no Ansible import.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import calendar
import datetime
import email
import ipaddress
import itertools
import re
from email.utils import parsedate_tz

# The limits: header lines read from the top; fields of a kind read (Received, or
# Authentication-Results and Received-SPF); characters read of one unfolded field; characters of a
# string in a result, and of a bounce's diagnostic or returned header line; results of one field,
# properties of one result, recipients of a bounce; returned header lines kept; bytes of a bounce
# read, characters of its text searched, multipart nesting followed, parts looked at.
MAX_LINES, MAX_FIELDS, MAX_VALUE, MAX_STRING, MAX_TEXT, MAX_ITEMS = 20000, 100, 8192, 255, 1000, 50
MAX_ORIGINAL_LINES, MAX_MESSAGE, MAX_BODY, MAX_DEPTH, MAX_PARTS = 500, 4 * 1024 * 1024, 64 * 1024, 5, 50

_SURROGATE = re.compile(u'[\ud800-\udfff]')
_SPECIAL = re.compile(r'(\\.|[()"])', re.S)
_CLAUSES = ('from', 'by', 'via', 'with', 'id', 'for')
_PROTOCOL = re.compile(r'^(?:(?:UTF8)?(?:E?SMTP|LMTP)S?A?|HTTPS?|LOCAL|IMAPS?|POP3S?|MAPI|QMQP)$', re.I)
_TLS_PROTOCOL = re.compile(r'^(?:(?:UTF8)?(?:E?SMTP|LMTP)SA?|HTTPS)$', re.I)
# Postfix "(using TLSv1.3 with cipher ...)", Exchange and Google "(version=TLS1_2, cipher=...)",
# Sendmail "(version=TLSv1.3 cipher=...)", Exim "(TLS1.3)" or "(TLS1.2:ECDHE_RSA_...:256)".
_TLS = re.compile(r'(?:^\s*|\busing\s+|\bversion=\s*)(TLS|SSL)v?(\d)(?:[._](\d))?')
_BRACKETED = re.compile(r'\[(?:IPv6:)?([0-9A-Fa-f:.]{2,45})\]', re.I)
_HELO = re.compile(r'\bhelo[=\s]\s*\[?([^\s()\[\]]+)', re.I)
_DATE = re.compile(r'(?:\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?\s*)?\b\d{1,2}\s+'
                   r'(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\s+\d{2,4}\s+\d{1,2}:\d{2}(?::\d{2})?'
                   r'(?:\s*[+-]\d{4}|\s+[A-Z]{1,5}\b)?', re.I)
_ATOM = re.compile(r'=|[^\s=]+')
_DIGITS = re.compile(r'^[0-9]{1,9}$')
_SPF_RESULTS = ('pass', 'fail', 'softfail', 'neutral', 'none', 'temperror', 'permerror')
_STATUS = re.compile(r'(?<![\d.])[245]\.\d{1,3}\.\d{1,3}(?!\.?\d)')
_BOUNCE_SUBJECT = re.compile(r'undeliver|returned mail|delivery status notification|delivery (?:has )?fail|'
                             r'failure notice|non-?delivery|mail delivery (?:failed|system)|could not be delivered', re.I)
_QUOTED_START = re.compile(r'^(?:Return-Path|Received|Message-ID|X-Mailops-Roundtrip|DKIM-Signature):', re.I | re.M)
_HEADER_LINE = re.compile(r'^(?:[!-9;-~]+:|[ \t])')
_ANGLE_RECIPIENT = re.compile(r'^<([^<>\s@]+@[^<>\s]+)>:', re.M)
_ORIGINAL_TYPES = ('message/rfc822', 'text/rfc822-headers', 'message/rfc822-headers')


def _text(value):
    """value as a str a result can carry: bytes decoded and lone surrogates replaced."""
    try:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value).decode('utf-8', 'replace')
        value = value if isinstance(value, str) else str(value)
        try:
            return value.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')
        except UnicodeEncodeError:  # a surrogate no bytes stand behind
            return _SURROGATE.sub(u'\ufffd', value)
    except Exception:  # a broken __str__ of a caller's object: nothing to read
        return ''


def _cap(value, limit=MAX_STRING):
    """value cut at limit characters; None for nothing (or no str)."""
    return (value[:limit] or None) if isinstance(value, str) else None


def _lines(headers):
    """The lines of headers (see the module's docstring), at most MAX_LINES."""
    if hasattr(headers, 'items'):
        items = ('%s: %s' % (_text(name), _text(value)) for name, value in headers.items())
    elif isinstance(headers, (str, bytes, bytearray)):
        items = [headers]
    else:
        items = headers
    count = 0
    for item in items:
        text = _text(item)
        for line in (text[:-1] if text.endswith('\n') else text).split('\n'):  # 'line\r\n' is one line
            count += 1
            if count > MAX_LINES:
                return
            yield line.rstrip('\r')


def _fields(headers, names=None):
    """[(lower-case name, value)] of the fields named in names (all when None), top to bottom,
    up to the blank line that ends a header: each unfolded, its white space collapsed, read up to
    MAX_VALUE characters; at most MAX_FIELDS of them."""
    found, size = [], 0
    current = None
    for line in _lines(headers):
        if line[:1] in (' ', '\t'):
            if current is not None and size < MAX_VALUE:
                current[1].append(line)
                size += len(line)
            continue
        if not line or len(found) >= MAX_FIELDS:
            break
        name, colon, value = line.partition(':')
        name = name.strip().lower()
        current = (name, [value]) if colon and (names is None or name in names) else None
        if current is not None:
            found.append(current)
            size = len(value)
    return [(name, ' '.join(''.join(parts)[:MAX_VALUE].split())) for name, parts in found]


def _first(fields):
    """{name: value} of the first field of each name."""
    out = {}
    for name, value in fields:
        out.setdefault(name, value)
    return out


def _lex(text, quotes=True):
    """text as [(kind, str)], kind 'text', 'comment' (nested comments inside) or 'quoted' (when
    quotes): a backslash quotes the next character; an unclosed comment or string runs to the end."""
    items, buf, depth, quoted = [], [], 0, False

    def flush(kind):
        items.append((kind, ''.join(buf)))
        del buf[:]

    for n, piece in enumerate(_SPECIAL.split(text)):
        if n % 2 == 0:
            buf.append(piece)
        elif piece[0] == '\\':
            buf.append(piece[1] if depth or quoted else piece)
        elif quoted:
            if piece == '"':
                flush('quoted')
                quoted = False
            else:
                buf.append(piece)
        elif depth:
            depth += {'(': 1, ')': -1}.get(piece, 0)
            if depth:
                buf.append(piece)
            else:
                flush('comment')
        elif piece == '(':
            flush('text')
            depth = 1
        elif piece == '"' and quotes:
            flush('text')
            quoted = True
        else:  # a stray ')', or a '"' that quotes nothing here
            buf.append(' ' if piece == ')' else piece)
    flush('quoted' if quoted else 'comment' if depth else 'text')
    return items


def _moment(text):
    """(epoch seconds, ISO 8601 UTC) of an RFC 5322 date (no zone: UTC), or (None, None)."""
    try:
        parts = parsedate_tz(text)
        # A leap second (:60) counts as :59.
        moment = datetime.datetime(*(parts[:5] + (min(parts[5], 59),))) - datetime.timedelta(seconds=parts[9] or 0)
        return (calendar.timegm(moment.timetuple()), '%04d-%02d-%02dT%02d:%02d:%02dZ' % moment.timetuple()[:6])
    except Exception:  # None, or numbers out of range: no date
        return None, None


def _address(candidates):
    """The first IP address in candidates: bracketed inside one ('[192.0.2.1]:25 helo=x'), or
    one that is an address."""
    for text in candidates:
        for found in _BRACKETED.findall(text) + [text.strip().strip('[]')]:
            try:
                return str(ipaddress.ip_address(found))
            except ValueError:
                continue
    return None


def _received(value):
    """One hop from one Received field's value."""
    items = _lex(value, quotes=False)
    semicolons = [n for n, (kind, text) in enumerate(items) if kind == 'text' and ';' in text]
    date_text = None
    if semicolons:  # the date follows the last ';' outside comments
        last = semicolons[-1]
        head, _semicolon, tail = items[last][1].rpartition(';')
        date_text = ' '.join([tail] + [text for kind, text in items[last + 1:] if kind == 'text'])
        items = items[:last] + [('text', head)]
    clauses, notes, current = {}, {}, None
    for kind, text in items:
        if kind == 'comment':
            notes.setdefault(current, []).append(text)
            continue
        for word in text.replace(';', ' ').split():
            if word.lower() in _CLAUSES and word.lower() not in clauses:
                current = word.lower()
                clauses[current] = []
            elif current is not None:
                clauses[current].append(word)
    epoch, stamp = _moment(date_text)
    if epoch is None:  # no ';' before the date, or garbage there: the last date-like text outside comments
        where = date_text if date_text is not None else ' '.join(text for kind, text in items if kind == 'text')
        dates = _DATE.findall(where)
        epoch, stamp = _moment(dates[-1]) if dates else (None, None)

    def word(clause):
        return (clauses.get(clause) or [None])[0]

    source, from_notes = word('from'), notes.get('from', [])
    helo = _HELO.search(' '.join(from_notes))
    if source and helo and (source.startswith('[') or source.lower() == 'unknown'):
        source = helo.group(1)  # Exim "from [192.0.2.1] (helo=x)", qmail "from unknown (HELO x)"
    protocol = clauses.get('with') or []
    protocol = protocol[0].upper() if protocol and _PROTOCOL.match(protocol[0]) else ' '.join(protocol)
    tls_version = None
    for note in [note for group in notes.values() for note in group]:
        match = _TLS.search(note)
        if match:
            tls_version = '%sv%s%s' % (match.group(1), match.group(2), '.' + match.group(3) if match.group(3) else '')
            break
    tls = True if tls_version or _TLS_PROTOCOL.match(protocol) else None
    return {'from': _cap(source), 'from_ip': _address(from_notes + [word('from') or '']), 'by': _cap(word('by')),
            'with': _cap(protocol), 'tls': tls, 'tls_version': tls_version, 'id': _cap(word('id')),
            'for': _cap((word('for') or '').strip('<>,')), 'timestamp': stamp, 'epoch': epoch}


def hops(headers):
    """The Received fields of headers as hops in the order the mail travelled (the bottom-most
    field is the first hop; of more than MAX_FIELDS only the topmost are read): dicts with from,
    from_ip, by, with, tls (True or None: no Received form reliably states plaintext),
    tls_version ('TLSv1.3'), id, for, timestamp (ISO 8601 UTC), epoch, delay_s (seconds since the
    hop before; None for the first hop or when either date is unknown) and clock_skew (True when
    delay_s is negative: it is reported as it is)."""
    result = []
    try:
        previous = None
        for _name, value in reversed(_fields(headers, ('received',))):
            hop = _received(value)
            epoch = hop['epoch']
            hop['delay_s'] = epoch - previous if epoch is not None and previous is not None else None
            hop['clock_skew'] = hop['delay_s'] is not None and hop['delay_s'] < 0
            previous = epoch
            result.append(hop)
    except Exception:  # a bug of ours must not fail a probe: what was read stands
        pass
    return result


def hops_summary(hop_list):
    """{'hops', 'total_s' (first to last dated hop), 'max_delay_s', 'clock_skew' (some hop is
    dated before the one before it: warn), 'undated'} of hops()'s result."""
    dated = [hop['epoch'] for hop in hop_list if hop.get('epoch') is not None]
    delays = [hop['delay_s'] for hop in hop_list if hop.get('delay_s') is not None]
    return {'hops': len(hop_list), 'total_s': dated[-1] - dated[0] if len(dated) > 1 else None,
            'max_delay_s': max(delays) if delays else None,
            'clock_skew': any(hop.get('clock_skew') for hop in hop_list), 'undated': len(hop_list) - len(dated)}


def _segments(value):
    """The ';'-separated parts of a field as lists of (quoted, text) tokens; comments dropped."""
    segments = [[]]
    for kind, text in _lex(value):
        if kind == 'quoted':
            segments[-1].append((True, text))
        elif kind == 'text':
            for n, part in enumerate(text.split(';')):
                if n:
                    segments.append([])
                segments[-1].extend((False, atom) for atom in _ATOM.findall(part))
    return segments


def _pairs(tokens):
    """[(key, value)] of 'key=value' tokens: a key's atoms joined across '.' and '/' (RFC 8601
    allows CFWS there), '=' right after a value kept in it (base64 padding)."""
    pairs, key, n = [], [], 0
    while n < len(tokens):
        quoted, text = tokens[n]
        n += 1
        if quoted or text != '=':
            if not (key and (key[-1].endswith(('.', '/')) or text.startswith(('.', '/')))):
                key = []
            key.append(text)
        elif key:
            value = ''
            if n < len(tokens) and tokens[n] != (False, '='):
                value = tokens[n][1]
                n += 1
                while n < len(tokens) and tokens[n] == (False, '='):
                    value += '='
                    n += 1
            pairs.append((''.join(key), value))
            key = []
    return pairs


def _properties(pairs):
    out = {}
    for key, value in pairs[:MAX_ITEMS]:
        out.setdefault(_cap(key.lower()), _cap(value))
    return out


def _authentication_results(value):
    segments = _segments(value)
    entry = {'header': 'Authentication-Results', 'authserv_id': None, 'version': None, 'results': []}
    head = segments[0]
    if (False, '=') not in head:  # else no authserv-id (Microsoft): the first part is a result already
        segments = segments[1:]
        entry['authserv_id'] = _cap(head[0][1]) if head else None
        if len(head) > 1 and _DIGITS.match(head[1][1]):
            entry['version'] = int(head[1][1])
    for tokens in segments[:MAX_ITEMS]:
        pairs = _pairs(tokens)
        if pairs:  # "none", or garbage, has none
            reasons = [value for key, value in pairs[1:] if key.lower() == 'reason']
            entry['results'].append({'method': _cap(pairs[0][0].split('/')[0].lower()), 'result': _cap(pairs[0][1].lower()),
                                     'reason': _cap(reasons[0]) if reasons else None,
                                     'properties': _properties([pair for pair in pairs[1:] if pair[0].lower() != 'reason'])})
    return entry


def _received_spf(value):
    tokens = [token for tokens in _segments(value) for token in tokens]
    result = tokens[0][1].lower() if tokens else None
    if result not in _SPF_RESULTS:
        return None
    properties = _properties(_pairs(tokens[1:]))
    return {'header': 'Received-SPF', 'authserv_id': properties.get('receiver'), 'version': None,
            'results': [{'method': 'spf', 'result': result, 'reason': None, 'properties': properties}]}


def _norm(authserv_id):
    """An authserv-id as compared: case and a final dot aside."""
    return _text(authserv_id).strip().lower().rstrip('.') if authserv_id is not None else None


def _ids(authserv_ids):
    """The set of authserv_ids (one str, or several) as compared, or None."""
    if authserv_ids is None:
        return None
    return set(_norm(one) for one in ([authserv_ids] if isinstance(authserv_ids, str) else authserv_ids)) - set([None])


def authentication_results(headers, authserv_ids=None):
    """The Authentication-Results (RFC 8601) and Received-SPF fields of headers, top to bottom:
    [{'header': 'Authentication-Results' or 'Received-SPF', 'authserv_id' (Received-SPF: its
    receiver=), 'version' (int or None), 'results': [{'method', 'result' (both lower case),
    'reason', 'properties': {'header.d': ..., 'smtp.mailfrom': ...}}]}]. With authserv_ids only the
    Authentication-Results fields of those authserv-ids are kept (Received-SPF fields all are)."""
    out = []
    try:
        ids = _ids(authserv_ids)
        for name, value in _fields(headers, ('authentication-results', 'received-spf')):
            entry = _authentication_results(value) if name == 'authentication-results' else _received_spf(value)
            readable = entry and (entry['authserv_id'] or entry['results'])
            if readable and (ids is None or entry['header'] == 'Received-SPF' or _norm(entry['authserv_id']) in ids):
                out.append(entry)
    except Exception:  # a bug of ours must not fail a probe: what was read stands
        pass
    return out


def _pick(method, results):
    found = [one for one in results if one.get('method') == method]
    if method == 'dkim' and any(one.get('result') == 'pass' for one in found):
        return 'pass'  # one good signature of several is enough
    if method == 'spf':  # the MAIL FROM identity before the HELO one
        found.sort(key=lambda one: 'smtp.mailfrom' not in one.get('properties', {}))
    return found[0].get('result') if found else None


def verdicts(parsed, authserv_ids=None):
    """{'spf', 'dkim', 'dmarc', 'authserv_id'} from authentication_results()'s result: from the
    topmost Authentication-Results field (the receiving side stamps last), or the topmost whose
    authserv-id is in authserv_ids (a field the sender forged below must not win). A method that
    field lacks comes from the next one down of the same authserv-id (OpenDKIM and OpenDMARC
    stamp apart). spf falls back to the topmost Received-SPF field; with authserv_ids only to one
    above the lowest trusted field or whose receiver= is one of them."""
    out = {'spf': None, 'dkim': None, 'dmarc': None, 'authserv_id': None}
    try:
        ids = _ids(authserv_ids)
        trusted = [(n, entry) for n, entry in enumerate(parsed) if entry.get('header') == 'Authentication-Results'
                   and (ids is None or _norm(entry.get('authserv_id')) in ids)]
        if trusted:
            out['authserv_id'] = trusted[0][1].get('authserv_id')
        group = [(n, entry) for n, entry in trusted if _norm(entry.get('authserv_id')) == _norm(out['authserv_id'])]
        for method in ('spf', 'dkim', 'dmarc'):
            for _n, entry in group:
                out[method] = out[method] or _pick(method, entry.get('results', []))
        lowest = group[-1][0] if group else -1
        for n, entry in enumerate(parsed):
            if out['spf'] is None and entry.get('header') == 'Received-SPF' and entry.get('results') and (
                    ids is None or n < lowest or _norm(entry.get('authserv_id')) in ids):
                out['spf'] = entry['results'][0].get('result')
    except Exception:  # a hand-made parsed: what was read stands
        pass
    return out


def _raw(item):
    """item as bytes: a str encoded as UTF-8."""
    return bytes(item) if isinstance(item, (bytes, bytearray)) else _text(item).encode('utf-8')


def _parts(message):
    """The parts of message depth first: at most MAX_PARTS, MAX_DEPTH multiparts deep, never
    into an attached message."""
    found, stack = [], [(message, 0)]
    while stack and len(found) < MAX_PARTS:
        part, depth = stack.pop()
        found.append(part)
        if part.get_content_maintype() == 'multipart' and part.is_multipart() and depth < MAX_DEPTH:
            stack.extend((child, depth + 1) for child in reversed(part.get_payload()[:MAX_PARTS]))
    return found


def _header_lines(source):
    """The header lines of source (a Message, bytes or str) up to its blank line, cut."""
    return [line[:MAX_TEXT] for line in itertools.islice(itertools.takewhile(bool, _lines(source)), MAX_ORIGINAL_LINES)]


def _typed(value):
    """'rfc822; bob@example.net' -> 'bob@example.net', 'dns; mx.example.net' -> 'mx.example.net'."""
    return _cap(value.partition(';')[2].strip(' <>') if value and ';' in value else (value or '').strip(' <>'))


def _recipient(block):
    status = _STATUS.search(block.get('status', ''))
    return {'action': _cap((block.get('action') or '').lower().split(' ')[0]), 'status': status and status.group(0),
            'diagnostic': _cap(block.get('diagnostic-code'), MAX_TEXT), 'recipient': _typed(block.get('final-recipient')),
            'original_recipient': _typed(block.get('original-recipient')), 'remote_mta': _typed(block.get('remote-mta'))}


def _report(part):
    """The blocks of a message/delivery-status part as {lower-case name: value}: the per-message
    block first, then one per recipient."""
    payload = part.get_payload()
    if not isinstance(payload, list):  # not parsed into blocks: split the text at blank lines
        payload = _text(part.get_payload(decode=True) or b'').replace('\r\n', '\n').split('\n\n')
    return [_first(_fields(block)) for block in payload[:MAX_ITEMS]]


def _bounce(message):
    """Whether a mail with no delivery-status part still looks like a bounce."""
    top = _first(_fields(message, ('from', 'subject', 'return-path')))
    sender = top.get('from', '').lower()
    return bool(top.get('return-path', '').replace(' ', '') == '<>' or 'mailer-daemon' in sender
                or 'postmaster@' in sender or _BOUNCE_SUBJECT.search(top.get('subject', '')))


def delivery_status(message):
    """The delivery status of a bounce (bytes, str or lines): None when message is no bounce,
    else {'format': 'dsn' (a message/delivery-status part, RFC 3464) or 'text' (a plain-text
    bounce: qmail, an old Exchange), 'action', 'status', 'diagnostic', 'recipient' (the final
    recipient), 'original_recipient', 'reporting_mta', 'remote_mta', 'recipients' (one dict of
    those per recipient; the top level shows the first failed one), 'original_message_id',
    'original_headers' (the header lines of the returned message)}."""
    try:
        if not isinstance(message, (bytes, bytearray, str)):  # lines
            message = b'\r\n'.join(_raw(line).rstrip(b'\r\n') for line in message)
        parsed = email.message_from_bytes(_raw(message)[:MAX_MESSAGE])
        report, original, texts = None, None, []
        for part in _parts(parsed):
            kind = part.get_content_type()
            if kind == 'message/delivery-status' and report is None:
                report = _report(part)
            elif kind in _ORIGINAL_TYPES and original is None:
                payload = part.get_payload()
                original = _header_lines(payload[0] if isinstance(payload, list) and payload else
                                         part.get_payload(decode=True) or b'')
            elif part.get_content_maintype() == 'text' and len(texts) < 3:
                texts.append(_text((part.get_payload(decode=True) or b'')[:MAX_BODY]))
        if report is not None:
            rows = [_recipient(block) for block in report if set(block) & {'final-recipient', 'action', 'status'}]
            result = {'format': 'dsn', 'reporting_mta': _typed(report[0].get('reporting-mta')) if report else None}
        elif _bounce(parsed):
            text = '\n'.join(texts)
            start = _QUOTED_START.search(text)
            status = _STATUS.search(text, 0, start.start() if start else len(text))
            line = text[text.rfind('\n', 0, status.start()) + 1:].split('\n', 1)[0].strip() if status else None
            recipient = _ANGLE_RECIPIENT.search(text)
            rows = [{'action': {'5': 'failed', '4': 'delayed'}.get(status.group(0)[0]) if status else None,
                     'status': status and status.group(0), 'diagnostic': _cap(line, MAX_TEXT),
                     'recipient': _cap(recipient and recipient.group(1)), 'original_recipient': None, 'remote_mta': None}]
            result = {'format': 'text', 'reporting_mta': None}
            if original is None and start:  # the returned header quoted in the text, up to its first other line
                original = list(itertools.takewhile(_HEADER_LINE.match, _header_lines(text[start.start():])))
        else:
            return None
        rows = rows[:MAX_ITEMS]
        main = next((row for row in rows if row['action'] == 'failed'), rows[0] if rows else None)
        result.update(main or dict.fromkeys(('action', 'status', 'diagnostic', 'recipient', 'original_recipient',
                                             'remote_mta')))
        result['recipients'] = rows
        result['original_headers'] = original or []
        result['original_message_id'] = _cap(_first(_fields(original or [], ('message-id',))).get('message-id'))
        return result
    except Exception:  # a bug of ours, or the parser's on a hostile message: no answer rather than a failure
        return None
