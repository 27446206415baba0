"""The header readers (_headers): the hops of Received headers, Authentication-Results and
Received-SPF verdicts, and the delivery status of bounces, on the forms real MTAs write, the
RFC examples, and hostile input that must never raise nor make a result large."""

import json
import random
import time

import pytest

from ansible_collections.mailops.health.plugins.module_utils import _headers
from ansible_collections.mailops.health.plugins.module_utils._headers import (
    authentication_results, delivery_status, hops, hops_summary, verdicts,
)
from ansible_collections.mailops.health.plugins.module_utils._roundtrip import TOKEN_HEADER, parse_headers, token_of

TOKEN = '0123456789abcdef0123456789abcdef'
HOP_KEYS = {'from', 'from_ip', 'by', 'with', 'tls', 'tls_version', 'id', 'for', 'timestamp', 'epoch', 'delay_s',
            'clock_skew'}
DSN_KEYS = {'format', 'action', 'status', 'diagnostic', 'recipient', 'original_recipient', 'reporting_mta', 'remote_mta',
            'recipients', 'original_message_id', 'original_headers'}


def header_lines(text):
    """A header written flush left in this file as the list of lines a mailbox hands over."""
    return text.strip('\n').split('\n')


def crlf(text):
    return text.strip('\n').replace('\n', '\r\n').encode('utf-8') + b'\r\n'


def one_hop(value):
    found = hops(header_lines('Received: ' + value))
    assert len(found) == 1
    return found[0]


def json_safe(result):
    """What a module returns must survive JSON and UTF-8 (no lone surrogates)."""
    json.dumps(result, ensure_ascii=False).encode('utf-8')
    return result


# -- Received: one hop per MTA form ------------------------------------------------------------

HOP_CASES = [
    # Postfix smtpd in the Debian bookworm lab (smtpd_tls_received_header = yes), folded.
    ('postfix_tls', """from probe.example (unknown [172.18.0.1])
        (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
         key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)
        (No client certificate requested)
        by mail.lab.test (Postfix) with ESMTPS id 4T3xYz1abcz9sTL
        for <bob@lab.test>; Mon,  1 Jan 2024 10:00:01 +0000 (UTC)""",
     {'from': 'probe.example', 'from_ip': '172.18.0.1', 'by': 'mail.lab.test', 'with': 'ESMTPS', 'tls': True,
      'tls_version': 'TLSv1.3', 'id': '4T3xYz1abcz9sTL', 'for': 'bob@lab.test', 'timestamp': '2024-01-01T10:00:01Z',
      'epoch': 1704103201}),
    # Postfix submission: the HELO is an address literal, the client address is in the comment.
    ('postfix_authenticated', """from [192.168.1.10] (unknown [198.51.100.7])
        (Authenticated sender: alice@example.com)
        by smtp.example.com (Postfix) with ESMTPSA id 4T3xYz0abcz9sT1
        for <bob@example.net>; Mon,  1 Jan 2024 10:00:00 +0000 (UTC)""",
     {'from': '[192.168.1.10]', 'from_ip': '198.51.100.7', 'by': 'smtp.example.com', 'with': 'ESMTPSA', 'tls': True,
      'tls_version': None, 'for': 'bob@example.net'}),
    ('postfix_plain', 'from localhost (localhost [127.0.0.1]) by mail.example.com (Postfix) with ESMTP id 1A2B3C; '
                      'Mon, 1 Jan 2024 10:00:00 +0000',
     {'from': 'localhost', 'from_ip': '127.0.0.1', 'with': 'ESMTP', 'tls': None, 'tls_version': None, 'id': '1A2B3C',
      'for': None}),
    # No "(Postfix)", the TLS comment without ESMTPS, an IPv6 literal.
    ('postfix_ipv6_tls_comment', 'from mx.example.org (mx.example.org [IPv6:2001:db8::25]) (using TLSv1.2 with cipher '
                                 'ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)) (Client did not present a certificate) '
                                 'by mail.example.com with ESMTP id 4T3; Mon, 1 Jan 2024 10:00:00 +0000',
     {'from_ip': '2001:db8::25', 'by': 'mail.example.com', 'with': 'ESMTP', 'tls': True, 'tls_version': 'TLSv1.2'}),
    ('postfix_pickup', 'by mail.lab.test (Postfix, from userid 0) id 4T3xYz2xyz; Mon,  1 Jan 2024 10:00:00 +0000 (UTC)',
     {'from': None, 'from_ip': None, 'by': 'mail.lab.test', 'with': None, 'id': '4T3xYz2xyz',
      'timestamp': '2024-01-01T10:00:00Z'}),
    # Dovecot 2.3 LMTP as the bookworm lab writes it, and the LMTPS form.
    ('dovecot_lmtp', """from mail.lab.test ([127.0.0.1])
        by mail.lab.test with LMTP
        id 8OnYJ4nDkmXlAQAAtbYnBA
        (envelope-from <alice@lab.test>)
        for <bob@lab.test>; Mon, 01 Jan 2024 10:00:02 +0000""",
     {'from': 'mail.lab.test', 'from_ip': '127.0.0.1', 'by': 'mail.lab.test', 'with': 'LMTP', 'tls': None,
      'id': '8OnYJ4nDkmXlAQAAtbYnBA', 'for': 'bob@lab.test', 'timestamp': '2024-01-01T10:00:02Z'}),
    ('dovecot_lmtps', 'from mail.lab.test ([127.0.0.1]) by mail.lab.test with LMTPS id kE3uLcN0kmUpAAAA6Ko9Vw '
                      '(envelope-from <x@lab.test>) for <y@lab.test>; Mon, 01 Jan 2024 10:00:02 +0000',
     {'with': 'LMTPS', 'tls': True, 'id': 'kE3uLcN0kmUpAAAA6Ko9Vw', 'for': 'y@lab.test'}),
    # Exim 4.9x: the HELO in a comment when the host is an address literal; TLS after "with".
    ('exim_literal', 'from [192.0.2.1] (helo=mail.example.com) by mx.example.net with esmtps  (TLS1.3) tls '
                     'TLS_AES_256_GCM_SHA384 (Exim 4.96) (envelope-from <alice@example.com>) id 1rK2aB-000Xyz-1a '
                     'for bob@example.net; Mon, 01 Jan 2024 09:59:05 +0000',
     {'from': 'mail.example.com', 'from_ip': '192.0.2.1', 'by': 'mx.example.net', 'with': 'ESMTPS', 'tls': True,
      'tls_version': 'TLSv1.3', 'id': '1rK2aB-000Xyz-1a', 'for': 'bob@example.net'}),
    ('exim_port_and_offset', 'from mail.example.com ([192.0.2.1]:54321 helo=mail.example.com) by mx.example.net with '
                             'esmtpsa (TLS1.2:ECDHE_RSA_AES_256_GCM_SHA384:256) (Exim 4.94.2) (envelope-from '
                             '<a@example.com>) id 1abcde-0001Xy-9Z for b@example.net; Mon, 01 Jan 2024 10:00:00 +0100',
     {'from': 'mail.example.com', 'from_ip': '192.0.2.1', 'with': 'ESMTPSA', 'tls_version': 'TLSv1.2',
      'timestamp': '2024-01-01T09:00:00Z'}),
    ('exim_local', 'from alice by mx.example.net with local (Exim 4.96) (envelope-from <alice@example.net>) '
                   'id 1rK2aB-000Xyz-1a; Mon, 01 Jan 2024 10:00:00 +0000',
     {'from': 'alice', 'from_ip': None, 'with': 'LOCAL', 'tls': None}),
    ('sendmail', """from mail.example.com (mail.example.com [192.0.2.1])
        by mx.example.net (8.15.2/8.15.2/Debian-22) with ESMTPS id 40BA0xYZ012345
        (version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=NOT)
        for <bob@example.net>; Mon, 1 Jan 2024 10:00:00 +0100""",
     {'from': 'mail.example.com', 'from_ip': '192.0.2.1', 'by': 'mx.example.net', 'with': 'ESMTPS',
      'tls_version': 'TLSv1.3', 'id': '40BA0xYZ012345', 'for': 'bob@example.net', 'timestamp': '2024-01-01T09:00:00Z'}),
    ('qmail_invoked', '(qmail 1234 invoked by uid 0); 1 Jan 2024 10:00:00 -0000',
     {'from': None, 'by': None, 'with': None, 'id': None, 'timestamp': '2024-01-01T10:00:00Z'}),
    ('qmail_network', """from unknown (HELO mail.example.com) (192.0.2.1)
        by mx.example.net with SMTP; 1 Jan 2024 10:00:00 -0000""",
     {'from': 'mail.example.com', 'from_ip': '192.0.2.1', 'by': 'mx.example.net', 'with': 'SMTP', 'tls': None}),
    ('exchange_online', 'from AM0PR01MB1234.eurprd01.prod.exchangelabs.com (2603:10a6:208:1::1) by '
                        'AM0PR01MB5678.eurprd01.prod.exchangelabs.com (2603:10a6:208:2::2) with Microsoft SMTP Server '
                        '(version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.7452.28 via Frontend '
                        'Transport; Mon, 1 Jan 2024 09:59:00 +0000',
     {'from': 'AM0PR01MB1234.eurprd01.prod.exchangelabs.com', 'from_ip': '2603:10a6:208:1::1',
      'by': 'AM0PR01MB5678.eurprd01.prod.exchangelabs.com', 'with': 'Microsoft SMTP Server', 'tls': True,
      'tls_version': 'TLSv1.2', 'id': '15.20.7452.28', 'timestamp': '2024-01-01T09:59:00Z'}),
    ('exchange_mapi', 'from AM0PR01MB1234.eurprd01.prod.exchangelabs.com ([fe80::1234]) by '
                      'AM0PR01MB1234.eurprd01.prod.exchangelabs.com ([fe80::1234%4]) with mapi id 15.20.7452.028; '
                      'Mon, 1 Jan 2024 10:00:00 +0000',
     {'from_ip': 'fe80::1234', 'with': 'MAPI', 'tls': None, 'id': '15.20.7452.028'}),
    ('gmail_internal', 'by 2002:a05:6a10:1234:b0:4e0:1234:5678 with SMTP id abc123csp1234567;\n'
                       '        Mon, 1 Jan 2024 02:00:00 -0800 (PST)',
     {'from': None, 'by': '2002:a05:6a10:1234:b0:4e0:1234:5678', 'with': 'SMTP', 'tls': None, 'id': 'abc123csp1234567',
      'timestamp': '2024-01-01T10:00:00Z'}),
    ('gmail_smtps', """from mail-sor-f41.google.com (mail-sor-f41.google.com. [209.85.220.41])
        by mx.google.com with SMTPS id x12sor1234567ejb.12.2024.01.01.02.00.00
        for <bob@gmail.com>
        (Google Transport Security);
        Mon, 01 Jan 2024 02:00:00 -0800 (PST)""",
     {'from': 'mail-sor-f41.google.com', 'from_ip': '209.85.220.41', 'with': 'SMTPS', 'tls': True,
      'for': 'bob@gmail.com', 'timestamp': '2024-01-01T10:00:00Z'}),
    ('gmail_mx_version', 'from mail.example.com (mail.example.com. [192.0.2.1]) by mx.google.com with ESMTPS id '
                         'a1si123 for <bob@gmail.com> (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256); '
                         'Mon, 01 Jan 2024 02:00:00 -0800 (PST)',
     {'tls': True, 'tls_version': 'TLSv1.3', 'for': 'bob@gmail.com'}),
    # RFC 8601 B.4: month before day in the date.
    ('rfc8601_b4', 'from dialup-1-2-3-4.example.net (dialup-1-2-3-4.example.net [192.0.2.200]) by '
                   'mail-router.example.com (8.11.6/8.11.6) with ESMTPA id g1G0r1kA003489; Fri, Feb 15 2002 17:19:07 -0800',
     {'from': 'dialup-1-2-3-4.example.net', 'from_ip': '192.0.2.200', 'with': 'ESMTPA', 'tls': None,
      'timestamp': '2002-02-16T01:19:07Z'}),
    ('webmail_http', 'from [192.0.2.7] by webmail.example.com with HTTP (HTTP/1.1 POST); Mon, 01 Jan 2024 10:00:00 +0000',
     {'from': '[192.0.2.7]', 'from_ip': '192.0.2.7', 'with': 'HTTP', 'tls': None}),
    ('utf8smtps', 'from a.example ([192.0.2.5]) by b.example with UTF8SMTPS id 9; Mon, 1 Jan 2024 10:00:00 +0000',
     {'with': 'UTF8SMTPS', 'tls': True}),
    ('nested_parentheses', 'from a.example (relay (by evil.example (with LMTPS)) [192.0.2.9]) by c.example with ESMTP '
                           'id 1; Mon, 1 Jan 2024 10:00:00 +0000',
     {'from': 'a.example', 'from_ip': '192.0.2.9', 'by': 'c.example', 'with': 'ESMTP', 'tls': None, 'id': '1'}),
    ('missing_semicolon', 'from a.example by b.example with ESMTP id 77 Mon, 1 Jan 2024 10:00:00 +0000',
     {'from': 'a.example', 'by': 'b.example', 'id': '77', 'timestamp': '2024-01-01T10:00:00Z'}),
    ('many_spaces', 'from   a.example\t\t(  [192.0.2.3]  )   by   b.example   with   ESMTP ;   Mon,  1 Jan 2024   '
                    '10:00:00   +0000',
     {'from': 'a.example', 'from_ip': '192.0.2.3', 'by': 'b.example', 'with': 'ESMTP',
      'timestamp': '2024-01-01T10:00:00Z'}),
    ('upper_case_keywords', 'FROM a.example BY b.example WITH esmtp ID x1 FOR <c@b.example>; Mon, 1 Jan 2024 10:00:00 GMT',
     {'from': 'a.example', 'by': 'b.example', 'with': 'ESMTP', 'id': 'x1', 'for': 'c@b.example',
      'timestamp': '2024-01-01T10:00:00Z'}),
    ('no_zone', 'from a by b; Mon, 1 Jan 2024 10:00:00', {'timestamp': '2024-01-01T10:00:00Z'}),
    ('date_after_a_phrase', 'from a by b with Microsoft SMTP Server; Mon, 1 Jan 2024 10:00:00 +0000',
     {'with': 'Microsoft SMTP Server', 'timestamp': '2024-01-01T10:00:00Z'}),
    ('leap_second', 'from a by b; Sat, 31 Dec 2016 23:59:60 +0000', {'timestamp': '2016-12-31T23:59:59Z'}),
]


@pytest.mark.parametrize('value,expected', [case[1:] for case in HOP_CASES], ids=[case[0] for case in HOP_CASES])
def test_hop_forms(value, expected):
    hop = one_hop(value)
    assert set(hop) == HOP_KEYS
    assert dict((key, hop[key]) for key in expected) == expected
    assert hop['delay_s'] is None and hop['clock_skew'] is False


@pytest.mark.parametrize('value,expected', [
    ('garbage', {'from': None, 'by': None, 'timestamp': None, 'epoch': None}),
    (';', {'from': None, 'timestamp': None}),
    ('', {'from': None, 'timestamp': None}),
    ('from a by b; not a date at all', {'from': 'a', 'by': 'b', 'timestamp': None, 'epoch': None}),
    ('from a by b; Mon, 32 Jan 2024 10:00:00 +0000', {'by': 'b', 'timestamp': None}),
    ('from a by b; Mon, 1 Jan 2024 25:00:00 +0000', {'by': 'b', 'timestamp': None}),
    ('from a by b; Mon, 1 Foo 2024 10:00:00 +0000', {'by': 'b', 'timestamp': None}),
    ('from a by b; 1 Jan 99999999999999999999 10:00:00 +0000', {'by': 'b', 'timestamp': None}),
    # An unclosed comment swallows the rest; a stray ')' is no comment.
    ('from a (b by c with ESMTP; Mon, 1 Jan 2024 10:00:00 +0000', {'from': 'a', 'by': None}),
    ('from a) by b; Mon, 1 Jan 2024 10:00:00 +0000', {'from': 'a', 'by': 'b', 'timestamp': '2024-01-01T10:00:00Z'}),
    ('from a ((( by b', {'from': 'a', 'by': None}),
    ('from a by b with ESMTPS (using TLSv9', {'tls': True, 'tls_version': 'TLSv9'}),
    # A keyword given twice: the first one counts.
    ('from a.example by b.example id 1 by evil.example id 2', {'by': 'b.example', 'id': '1'}),
    ('from a (not-an-ip [999.1.1.1]) by b', {'from_ip': None}),
    ('from a\x00b by c\x00 with ESMTP; Mon, 1 Jan 2024 10:00:00 +0000',
     {'from': 'a\x00b', 'by': 'c\x00', 'timestamp': '2024-01-01T10:00:00Z'}),
])
def test_hop_garbage_is_none(value, expected):
    hop = one_hop(value)
    assert dict((key, hop[key]) for key in expected) == expected


LAB_HEADER = """Return-Path: <monitor@lab.test>
Delivered-To: bob@lab.test
Received: from mail.lab.test ([127.0.0.1])
\tby mail.lab.test with LMTP
\tid 8OnYJ4nDkmXlAQAAtbYnBA
\t(envelope-from <monitor@lab.test>)
\tfor <bob@lab.test>; Mon, 01 Jan 2024 10:00:02 +0000
Received: from probe.test (unknown [172.18.0.1])
\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)
\t(No client certificate requested)
\tby mail.lab.test (Postfix) with ESMTPS id 4T3xYz1abcz9sTL
\tfor <bob@lab.test>; Mon,  1 Jan 2024 10:00:01 +0000 (UTC)
From: monitor@lab.test
To: bob@lab.test
Subject: [health] mailops.health round trip %s
X-Mailops-Roundtrip: %s
Message-ID: <170410320100.1.1@probe.test>
Date: Mon, 01 Jan 2024 10:00:00 +0000
""" % (TOKEN, TOKEN)


def test_lab_chain_in_travel_order():
    found = hops(header_lines(LAB_HEADER))
    assert [(hop['by'], hop['with'], hop['tls'], hop['delay_s']) for hop in found] == [
        ('mail.lab.test', 'ESMTPS', True, None), ('mail.lab.test', 'LMTP', None, 1)]
    assert found[0]['from'] == 'probe.test' and found[1]['from_ip'] == '127.0.0.1'
    assert hops_summary(found) == {'hops': 2, 'total_s': 1, 'max_delay_s': 1, 'clock_skew': False, 'undated': 0}


@pytest.mark.parametrize('form', ['str_lines', 'bytes_lines', 'crlf_lines', 'blob', 'bytes_blob', 'message', 'folded_items'])
def test_header_input_forms_read_alike(form):
    lines = header_lines(LAB_HEADER)
    given = {
        'str_lines': lines,
        'bytes_lines': [line.encode() for line in lines],
        'crlf_lines': [line + '\r\n' for line in lines],
        'blob': '\r\n'.join(lines) + '\r\n\r\nbody\r\n',
        'bytes_blob': ('\n'.join(lines) + '\n\nbody\n').encode(),
        'message': parse_headers(lines),
        # One item per field, its continuation lines inside it.
        'folded_items': LAB_HEADER.replace('\n\t', '\r\n\t').split('\n'),
    }[form]
    assert hops(given) == hops(lines)
    assert len(hops(given)) == 2


def test_header_ends_at_the_blank_line():
    lines = header_lines(LAB_HEADER) + ['', 'Received: from body.example by body.example; Mon, 1 Jan 2024 10:00:00 +0000']
    assert [hop['from'] for hop in hops(lines)] == ['probe.test', 'mail.lab.test']


def chain(*dates):
    """Received headers top to bottom for hops dated (travel order) dates."""
    return ['Received: from h%d.example by h%d.example with ESMTP id %d; %s' % (n, n + 1, n, date)
            for n, date in reversed(list(enumerate(dates)))]


def test_delays_between_hops():
    found = hops(chain('Mon, 1 Jan 2024 10:00:00 +0000', 'Mon, 1 Jan 2024 10:00:02 +0000',
                       'Mon, 1 Jan 2024 11:00:05 +0100'))
    assert [hop['id'] for hop in found] == ['0', '1', '2']
    assert [hop['delay_s'] for hop in found] == [None, 2, 3]
    assert [hop['clock_skew'] for hop in found] == [False, False, False]


def test_clock_skew_is_reported_as_is():
    found = hops(chain('Mon, 1 Jan 2024 10:00:00 +0000', 'Mon, 1 Jan 2024 09:59:30 +0000',
                       'Mon, 1 Jan 2024 10:00:01 +0000'))
    assert [hop['delay_s'] for hop in found] == [None, -30, 31]
    assert [hop['clock_skew'] for hop in found] == [False, True, False]
    summary = hops_summary(found)
    assert summary['clock_skew'] is True
    assert summary['total_s'] == 1 and summary['max_delay_s'] == 31


def test_missing_dates_break_delays_only_next_to_them():
    found = hops(chain('Mon, 1 Jan 2024 10:00:00 +0000', 'no date', 'Mon, 1 Jan 2024 10:00:04 +0000',
                       'Mon, 1 Jan 2024 10:00:05 +0000'))
    assert [hop['timestamp'] for hop in found] == ['2024-01-01T10:00:00Z', None, '2024-01-01T10:00:04Z',
                                                   '2024-01-01T10:00:05Z']
    assert [hop['delay_s'] for hop in found] == [None, None, None, 1]
    assert hops_summary(found) == {'hops': 4, 'total_s': 5, 'max_delay_s': 1, 'clock_skew': False, 'undated': 1}


def test_summary_of_nothing():
    assert hops([]) == []
    assert hops_summary([]) == {'hops': 0, 'total_s': None, 'max_delay_s': None, 'clock_skew': False, 'undated': 0}
    assert hops_summary(hops(chain('no date')))['total_s'] is None


# -- Received: hostile input -------------------------------------------------------------------

def test_ten_thousand_received_headers_keep_the_topmost():
    lines = ['Received: from h%d.example by mx.example with ESMTP id n%d; Mon, 1 Jan 2024 10:00:00 +0000' % (n, n)
             for n in range(10000)] + ['Subject: x']
    started = time.monotonic()
    found = hops(lines)
    assert time.monotonic() - started < 5
    assert len(found) == _headers.MAX_FIELDS
    # Travel order: the topmost header (n0) is the last hop read.
    assert found[-1]['id'] == 'n0' and found[0]['id'] == 'n%d' % (_headers.MAX_FIELDS - 1)


@pytest.mark.parametrize('lines', [
    ['Received: from ' + 'a' * 1000000 + ' by b; Mon, 1 Jan 2024 10:00:00 +0000'],
    ['Received: from ' + 'a' * 1000000],
    # 1 MB folded over 10,000 lines.
    ['Received: from a'] + [' (' + 'x' * 98 + ')' for _n in range(10000)] + [' by b; Mon, 1 Jan 2024 10:00:00 +0000'],
    ['Received: ' + '(' * 1000000],
    ['Received: ' + ')' * 1000000],
    ['Received: from a ' + '[' * 500000 + ']' * 500000],
    ['Received: ' + '\\' * 1000001],
    ['Received: ' + ' ;' * 500000],
    ['Received: ' + 'Mon, 1 Jan 2024 ' * 60000],
])
def test_huge_received_headers_are_cut(lines):
    started = time.monotonic()
    found = hops(lines)
    assert time.monotonic() - started < 5
    assert len(found) == 1
    for key in ('from', 'by', 'with', 'id', 'for'):
        assert found[0][key] is None or len(found[0][key]) <= _headers.MAX_STRING
    assert len(json.dumps(found)) < 10000


def test_non_utf8_and_nul_bytes():
    found = json_safe(hops([b'Received: from \xff\xfe.example ([192.0.2.1]) by mx\x00.example with ESMTP;'
                            b' Mon, 1 Jan 2024 10:00:00 +0000', b'Subject: \xc3\x28']))
    assert found[0]['from'] == '\ufffd\ufffd.example'
    assert found[0]['from_ip'] == '192.0.2.1' and found[0]['timestamp'] == '2024-01-01T10:00:00Z'


def test_surrogates_from_a_lenient_decode_are_replaced():
    found = json_safe(hops(['Received: from caf\udce9.example by b\ud800; Mon, 1 Jan 2024 10:00:00 +0000']))
    assert found[0]['from'] == 'caf\ufffd.example'


@pytest.mark.parametrize('headers', [None, 42, [None, 42, 3.5], {'Received': 'from a by b'}, [b'\x00' * 100],
                                     object(), iter(['Received: from a by b'])])
def test_odd_inputs_never_raise(headers):
    assert isinstance(hops(headers), list)
    assert isinstance(authentication_results(headers), list)
    assert set(verdicts(authentication_results(headers))) == {'spf', 'dkim', 'dmarc', 'authserv_id'}


def test_random_bytes_never_raise():
    rnd = random.Random(8601)
    alphabet = b'()[];:=."\\ \t\r\nabcfromby withidfor@<>0123456789TLSv1.2 ESMTPS\xff\x00-'
    for _n in range(300):
        blob = bytes(rnd.choice(alphabet) for _m in range(rnd.randint(0, 400)))
        lines = [b'Received: ' + blob, b'Authentication-Results: ' + blob, b'Received-SPF: ' + blob]
        json_safe(hops(lines))
        json_safe(verdicts(authentication_results(lines)))
        found = json_safe(delivery_status(b'From: MAILER-DAEMON@x\r\nContent-Type: multipart/report; boundary=b\r\n\r\n'
                                          b'--b\r\n' + blob))
        assert found is None or set(found) == DSN_KEYS


# -- Authentication-Results --------------------------------------------------------------------

def ar(value, name='Authentication-Results'):
    found = authentication_results(header_lines('%s: %s' % (name, value)))
    assert len(found) == 1
    return found[0]


def result(method, outcome, reason=None, **properties):
    return {'method': method, 'result': outcome, 'reason': reason,
            'properties': dict((key.replace('_', '.', 1), value) for key, value in properties.items())}


AR_CASES = [
    # RFC 8601 appendix B.
    ('b2_trivial', 'example.org 1; none', 'example.org', 1, []),
    ('b3_spf', 'example.com;\n          spf=pass smtp.mailfrom=example.net', 'example.com', None,
     [result('spf', 'pass', smtp_mailfrom='example.net')]),
    ('b4_auth', 'example.com;\n          auth=pass (cram-md5) smtp.auth=sender@example.net;\n'
                '          spf=pass smtp.mailfrom=example.net', 'example.com', None,
     [result('auth', 'pass', smtp_auth='sender@example.net'), result('spf', 'pass', smtp_mailfrom='example.net')]),
    ('b5_different_mtas', 'example.com;\n          auth=pass (cram-md5) smtp.auth=sender@example.com;\n'
                          '          spf=fail smtp.mailfrom=example.com', 'example.com', None,
     [result('auth', 'pass', smtp_auth='sender@example.com'), result('spf', 'fail', smtp_mailfrom='example.com')]),
    # RFC 7601 B.5, an unregistered method name with a dash.
    ('rfc7601_sender_id', 'example.com;\n          sender-id=fail header.from=example.com;\n'
                          '          dkim=pass (good signature) header.d=example.com', 'example.com', None,
     [result('sender-id', 'fail', header_from='example.com'), result('dkim', 'pass', header_d='example.com')]),
    ('b6_reasons', 'example.com;\n      dkim=pass reason="good signature"\n        header.i=@mail-router.example.net;\n'
                   '      dkim=fail reason="bad signature"\n        header.i=@newyork.example.com', 'example.com', None,
     [result('dkim', 'pass', 'good signature', header_i='@mail-router.example.net'),
      result('dkim', 'fail', 'bad signature', header_i='@newyork.example.com')]),
    ('b7_comment_heavy', 'foo.example.net (foobar) 1 (baz);\n    dkim (Because I like it) / 1 (One yay) = (wait for it) fail\n'
                         '      policy (A dot can go here) . (like that) expired\n'
                         "      (this surprised me) = (as I wasn't expecting it) 1362471462", 'foo.example.net', 1,
     [result('dkim', 'fail', policy_expired='1362471462')]),
    ('quoted_authserv_id', '"example.org"; none', 'example.org', None, []),
    # OpenDKIM: a ';' inside the comment.
    ('opendkim', 'mail.lab.test;\n\tdkim=pass (2048-bit key; unprotected) header.d=example.com header.i=@example.com '
                 'header.a=rsa-sha256 header.s=mail header.b=AbCdEfGh', 'mail.lab.test', None,
     [result('dkim', 'pass', header_d='example.com', header_i='@example.com', header_a='rsa-sha256', header_s='mail',
             header_b='AbCdEfGh')]),
    ('opendmarc', 'mail.lab.test; dmarc=pass (p=reject dis=none) header.from=example.com', 'mail.lab.test', None,
     [result('dmarc', 'pass', header_from='example.com')]),
    ('opendmarc_spf', 'mail.lab.test; spf=pass smtp.mailfrom=example.com', 'mail.lab.test', None,
     [result('spf', 'pass', smtp_mailfrom='example.com')]),
    ('gmail', 'mx.google.com;\n       dkim=pass header.i=@example.com header.s=20230601 header.b="AbC+dEf=";\n'
              '       spf=pass (google.com: domain of alice@example.com designates 192.0.2.1 as permitted sender) '
              'smtp.mailfrom=alice@example.com;\n       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=example.com',
     'mx.google.com', None,
     [result('dkim', 'pass', header_i='@example.com', header_s='20230601', header_b='AbC+dEf='),
      result('spf', 'pass', smtp_mailfrom='alice@example.com'), result('dmarc', 'pass', header_from='example.com')]),
    ('base64_padding_unquoted', 'mx.example; dkim=pass header.b=AbCd== header.s=s1', 'mx.example', None,
     [result('dkim', 'pass', header_b='AbCd==', header_s='s1')]),
    # Microsoft: no authserv-id at all.
    ('microsoft', 'spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=example.com; dkim=none (message not signed)\n'
                  ' header.d=none;dmarc=none action=none header.from=example.com;compauth=pass reason=100', None, None,
     [result('spf', 'pass', smtp_mailfrom='example.com'), result('dkim', 'none', header_d='none'),
      result('dmarc', 'none', action='none', header_from='example.com'), result('compauth', 'pass', '100')]),
    ('version_and_comment', 'mx.example.net 1 (our filter); SPF=Pass smtp.mailfrom=a@example.com', 'mx.example.net', 1,
     [result('spf', 'pass', smtp_mailfrom='a@example.com')]),
    ('method_version', 'mx.example.net; dkim/1=pass header.d=example.com', 'mx.example.net', None,
     [result('dkim', 'pass', header_d='example.com')]),
    ('arc_and_trailing_semicolon', 'mx.example.net; arc=pass (i=1 spf=pass); ', 'mx.example.net', None,
     [result('arc', 'pass')]),
    ('quoted_pair', 'mx.example.net; dkim=fail reason="bad \\"sig\\" (x)"', 'mx.example.net', None,
     [result('dkim', 'fail', 'bad "sig" (x)')]),
]


@pytest.mark.parametrize('value,authserv_id,version,results', [case[1:] for case in AR_CASES],
                         ids=[case[0] for case in AR_CASES])
def test_authentication_results_forms(value, authserv_id, version, results):
    entry = ar(value)
    assert entry == {'header': 'Authentication-Results', 'authserv_id': authserv_id, 'version': version,
                     'results': results}


@pytest.mark.parametrize('value', ['(((', ')))', '"unterminated; spf=pass', ';;;=;=', '= = =', 'a; =pass; spf=',
                                   'a; spf=pass smtp.mailfrom=' + 'x' * 100000, '\x00; spf=\x00', 'a;' * 100000])
def test_authentication_results_garbage(value):
    started = time.monotonic()
    found = json_safe(authentication_results(['Authentication-Results: ' + value]))
    assert time.monotonic() - started < 5
    for entry in found:
        assert len(entry['results']) <= _headers.MAX_ITEMS
        for one in entry['results']:
            assert all(len(text or '') <= _headers.MAX_STRING for text in [one['method'], one['result']]
                       + list(one['properties'].values()))


def test_unreadable_authentication_results_are_left_out():
    assert authentication_results(['Authentication-Results:', 'Authentication-Results: (only a comment)']) == []


def test_only_authentication_results_fields_are_read():
    lines = ['ARC-Authentication-Results: i=1; mx.example; dkim=pass',
             'Authentication-Results-Original: mx.example; dkim=pass', 'X-Authentication-Results: mx.example; spf=pass']
    assert authentication_results(lines) == []


@pytest.mark.parametrize('value,outcome,receiver', [
    ('Pass (mailfrom) identity=mailfrom; client-ip=192.0.2.1; helo=mail.example.com; envelope-from=alice@example.com; '
     'receiver=mail.lab.test', 'pass', 'mail.lab.test'),
    ('pass (google.com: domain of alice@example.com designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1;',
     'pass', None),
    ('Softfail (mailfrom) identity=mailfrom; client-ip=192.0.2.1; receiver=<UNKNOWN>', 'softfail', '<UNKNOWN>'),
    ('fail (example.org: domain of x@example.org does not designate 192.0.2.9 as permitted sender) '
     'receiver=mybox.example.org; client-ip=192.0.2.9; envelope-from="x@example.org";', 'fail', 'mybox.example.org'),
    ('TempError', 'temperror', None),
])
def test_received_spf(value, outcome, receiver):
    entry = ar(value, 'Received-SPF')
    assert entry['header'] == 'Received-SPF' and entry['authserv_id'] == receiver
    assert [(one['method'], one['result']) for one in entry['results']] == [('spf', outcome)]


def test_received_spf_with_no_result_word_is_left_out():
    assert authentication_results(['Received-SPF: maybe (who knows)', 'Received-SPF:']) == []


def test_received_spf_properties():
    entry = ar('Pass (mailfrom) identity=mailfrom; client-ip=192.0.2.1; envelope-from="alice@example.com"',
               'Received-SPF')
    assert entry['results'][0]['properties'] == {'identity': 'mailfrom', 'client-ip': '192.0.2.1',
                                                 'envelope-from': 'alice@example.com'}


# -- verdicts ---------------------------------------------------------------------------------

def judge(*fields, **kwargs):
    return verdicts(authentication_results(list(fields)), **kwargs)


def test_verdicts_of_the_lab_stack():
    assert judge('Authentication-Results: mail.lab.test; dkim=pass header.d=example.com; spf=pass '
                 'smtp.mailfrom=example.com; dmarc=pass header.from=example.com') == {
        'spf': 'pass', 'dkim': 'pass', 'dmarc': 'pass', 'authserv_id': 'mail.lab.test'}


def test_rfc8601_b6_multi_tiered():
    fields = ['Authentication-Results: example.com;', '      dkim=pass reason="good signature"',
              '        header.i=@mail-router.example.net;', '      dkim=fail reason="bad signature"',
              '        header.i=@newyork.example.com',
              'Received: from newyork.example.com (newyork.example.com [192.0.2.250]) by mail-router.example.net '
              '(8.11.6/8.11.6) for <recipient@example.com> with ESMTP id i7PK0sH7021929; Fri, Feb 15 2002 17:19:22 -0800',
              'Authentication-Results: example.net;', '      dkim=pass (good signature) header.i=@newyork.example.com']
    assert judge(*fields) == {'spf': None, 'dkim': 'pass', 'dmarc': None, 'authserv_id': 'example.com'}
    assert judge(*fields, authserv_ids=['example.net'])['authserv_id'] == 'example.net'
    assert hops(fields)[0]['for'] == 'recipient@example.com'


def test_verdicts_topmost_wins():
    fields = ['Authentication-Results: mail.lab.test; dmarc=fail header.from=example.com',
              'Authentication-Results: mail.lab.test; dmarc=pass header.from=example.com']
    assert judge(*fields)['dmarc'] == 'fail'


def test_one_passing_dkim_signature_is_enough():
    assert judge('Authentication-Results: mx.example; dkim=fail header.d=a.example; dkim=pass header.d=b.example; '
                 'dkim=neutral')['dkim'] == 'pass'
    assert judge('Authentication-Results: mx.example; dkim=fail header.d=a.example; dkim=neutral')['dkim'] == 'fail'


def test_spf_of_mail_from_before_helo():
    assert judge('Authentication-Results: mx.example; spf=pass smtp.helo=mail.example.com; '
                 'spf=fail smtp.mailfrom=alice@example.com')['spf'] == 'fail'


FORGED = 'Authentication-Results: mail.lab.test.evil.example; spf=pass smtp.mailfrom=bank.example; dkim=pass ' \
         'header.d=bank.example; dmarc=pass header.from=bank.example'


def test_forged_lower_header_ignored_with_authserv_ids():
    # The receiving side did not stamp at all: the only field is the sender's.
    assert judge(FORGED) == {'spf': 'pass', 'dkim': 'pass', 'dmarc': 'pass',
                             'authserv_id': 'mail.lab.test.evil.example'}
    nothing = {'spf': None, 'dkim': None, 'dmarc': None, 'authserv_id': None}
    assert judge(FORGED, authserv_ids=['mail.lab.test']) == nothing


def test_our_header_wins_below_a_foreign_one_with_authserv_ids():
    fields = ['Authentication-Results: relay.example.org; dkim=fail header.d=example.com',
              'Authentication-Results: MAIL.lab.test.; dkim=pass header.d=example.com', FORGED]
    assert judge(*fields) == {'spf': None, 'dkim': 'fail', 'dmarc': None, 'authserv_id': 'relay.example.org'}
    assert judge(*fields, authserv_ids=['mail.lab.test']) == {'spf': None, 'dkim': 'pass', 'dmarc': None,
                                                              'authserv_id': 'MAIL.lab.test.'}
    assert judge(*fields, authserv_ids='mail.lab.test')['dkim'] == 'pass'
    assert [entry['authserv_id'] for entry in authentication_results(fields, authserv_ids=['mail.lab.test'])] == [
        'MAIL.lab.test.']


def test_methods_stamped_apart_by_one_authserv_id_merge():
    # OpenDMARC and OpenDKIM each add their own field; a lower field of another authserv-id never fills in.
    fields = ['Authentication-Results: mail.lab.test; dmarc=pass header.from=example.com',
              'Authentication-Results: mail.lab.test; dkim=pass header.d=example.com', FORGED]
    assert judge(*fields) == {'spf': None, 'dkim': 'pass', 'dmarc': 'pass', 'authserv_id': 'mail.lab.test'}


def test_received_spf_is_the_fallback_for_spf():
    spf = 'Received-SPF: Softfail (mailfrom) identity=mailfrom; client-ip=192.0.2.1; receiver=<UNKNOWN>'
    ours = 'Authentication-Results: mail.lab.test; dkim=pass header.d=example.com'
    assert judge(spf, ours) == {'spf': 'softfail', 'dkim': 'pass', 'dmarc': None, 'authserv_id': 'mail.lab.test'}
    assert judge(spf)['spf'] == 'softfail'
    # An spf result of the Authentication-Results field wins.
    assert judge(spf, 'Authentication-Results: mail.lab.test; spf=fail smtp.mailfrom=example.com')['spf'] == 'fail'
    # With authserv_ids: above our field, or naming us as receiver, or not at all.
    assert judge(spf, ours, authserv_ids=['mail.lab.test'])['spf'] == 'softfail'
    assert judge(ours, spf, authserv_ids=['mail.lab.test'])['spf'] is None
    assert judge(ours, spf.replace('<UNKNOWN>', 'mail.lab.test'), authserv_ids=['mail.lab.test'])['spf'] == 'softfail'
    assert judge(spf, authserv_ids=['mail.lab.test'])['spf'] is None
    # authentication_results keeps Received-SPF fields whatever authserv_ids says.
    assert [entry['header'] for entry in authentication_results([spf, ours, FORGED], authserv_ids=['mail.lab.test'])] == [
        'Received-SPF', 'Authentication-Results']


def test_microsoft_verdicts():
    field = ('Authentication-Results: spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=example.com; dkim=none '
             '(message not signed) header.d=none;dmarc=none action=none header.from=example.com;compauth=pass reason=100')
    assert judge(field) == {'spf': 'pass', 'dkim': 'none', 'dmarc': 'none', 'authserv_id': None}
    assert judge(field, authserv_ids=['mail.lab.test'])['spf'] is None


@pytest.mark.parametrize('parsed', [[None], ['x'], [{'header': 'Authentication-Results'}], [{'results': 5}], 7, None])
def test_verdicts_of_odd_input_never_raise(parsed):
    assert set(verdicts(parsed)) == {'spf', 'dkim', 'dmarc', 'authserv_id'}


# -- delivery_status ---------------------------------------------------------------------------

PROBE_HEADERS = """Return-Path: <monitor@lab.test>
Received: from probe.test (unknown [172.18.0.1])
\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))
\tby mail.lab.test (Postfix) with ESMTPS id 4T3xYz1abcz9sTL
\tfor <nobody@lab.test>; Mon,  1 Jan 2024 10:00:01 +0000 (UTC)
From: monitor@lab.test
To: nobody@lab.test
Subject: [health] mailops.health round trip
 %s
X-Mailops-Roundtrip: %s
Message-ID: <170410320100.1.1@probe.test>
Date: Mon, 01 Jan 2024 10:00:00 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"
""" % (TOKEN, TOKEN)

PROBE_MAIL = PROBE_HEADERS + '\nRound-trip test mail sent by mailops.health.mail_roundtrip.\n'

POSTFIX_DSN = """Return-Path: <>
Delivered-To: monitor@lab.test
Received: by mail.lab.test (Postfix)
\tid 4T3xYz2xyz; Mon,  1 Jan 2024 10:00:02 +0000 (UTC)
Date: Mon,  1 Jan 2024 10:00:02 +0000 (UTC)
From: MAILER-DAEMON@mail.lab.test (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: monitor@lab.test
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4T3xYz1abcz9sTL.1704103202/mail.lab.test"
Content-Transfer-Encoding: 8bit
Message-Id: <20240101100002.4T3xYz2xyz@mail.lab.test>

This is a MIME-encapsulated message.

--4T3xYz1abcz9sTL.1704103202/mail.lab.test
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mail.lab.test.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

                   The mail system

<nobody@lab.test>: host 127.0.0.1[127.0.0.1] said: 550 5.1.1
    <nobody@lab.test>: User doesn't exist: nobody@lab.test (in reply to RCPT TO
    command)

--4T3xYz1abcz9sTL.1704103202/mail.lab.test
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.lab.test
X-Postfix-Queue-ID: 4T3xYz1abcz9sTL
X-Postfix-Sender: rfc822; monitor@lab.test
Arrival-Date: Mon,  1 Jan 2024 10:00:01 +0000 (UTC)

Final-Recipient: rfc822; nobody@lab.test
Original-Recipient: rfc822;nobody@lab.test
Action: failed
Status: 5.1.1
Remote-MTA: dns; 127.0.0.1
Diagnostic-Code: lmtp; 550 5.1.1 <nobody@lab.test>: User doesn't exist:
    nobody@lab.test

--4T3xYz1abcz9sTL.1704103202/mail.lab.test
Content-Description: %s
Content-Type: %s
Content-Transfer-Encoding: 8bit

%s
--4T3xYz1abcz9sTL.1704103202/mail.lab.test--
"""

POSTFIX_HEADERS_DSN = POSTFIX_DSN % ('Undelivered Message Headers', 'text/rfc822-headers', PROBE_HEADERS)
POSTFIX_MESSAGE_DSN = POSTFIX_DSN % ('Undelivered Message', 'message/rfc822', PROBE_MAIL)

POSTFIX_DELAYED = POSTFIX_HEADERS_DSN.replace('Action: failed', 'Action: delayed').replace(
    'Status: 5.1.1', 'Status: 4.4.1').replace('Diagnostic-Code: lmtp; 550 5.1.1', 'Diagnostic-Code: X-Postfix; 421 4.4.1')

# RFC 3464 appendix: the simple DSN and the multi-recipient DSN.
RFC3464_SIMPLE = """Date: Thu, 7 Jul 1994 17:16:05 -0400
From: Mail Delivery Subsystem <MAILER-DAEMON@CS.UTK.EDU>
Message-Id: <199407072116.RAA14128@CS.UTK.EDU>
Subject: Returned mail: Cannot send message for 5 days
To: <owner-info-mime@cs.utk.edu>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
              boundary="RAA14128.773615765/CS.UTK.EDU"

--RAA14128.773615765/CS.UTK.EDU

The original message was received at Sat, 2 Jul 1994 17:10:28 -0400
from root@localhost

   ----- The following addresses had delivery problems -----
<louisl@larry.slip.umd.edu>  (unrecoverable error)

   ----- Transcript of session follows -----
<louisl@larry.slip.umd.edu>... Deferred: Connection timed out
        with larry.slip.umd.edu.
Message could not be delivered for 5 days
Message will be deleted from queue

--RAA14128.773615765/CS.UTK.EDU
content-type: message/delivery-status

Reporting-MTA: dns; cs.utk.edu

Original-Recipient: rfc822;louisl@larry.slip.umd.edu
Final-Recipient: rfc822;louisl@larry.slip.umd.edu
Action: failed
Status: 4.0.0
Diagnostic-Code: smtp; 426 connection timed out
Last-Attempt-Date: Thu, 7 Jul 1994 17:15:49 -0400

--RAA14128.773615765/CS.UTK.EDU
content-type: message/rfc822

[original message goes here]

--RAA14128.773615765/CS.UTK.EDU--
"""

RFC3464_MULTI = """Date: Fri, 8 Jul 1994 09:21:47 -0400
From: Mail Delivery Subsystem <MAILER-DAEMON@CS.UTK.EDU>
Subject: Returned mail: User unknown
To: <owner-ietf-mta@cs.utk.edu>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
              boundary="JAA13167.773673707/CS.UTK.EDU"

--JAA13167.773673707/CS.UTK.EDU
content-type: text/plain; charset=us-ascii

   ----- The following addresses had delivery problems -----
<arathib@vnet.ibm.com>  (unrecoverable error)
<wsnell@sdcc13.ucsd.edu>  (unrecoverable error)

--JAA13167.773673707/CS.UTK.EDU
content-type: message/delivery-status

Reporting-MTA: dns; cs.utk.edu

Original-Recipient: rfc822;arathib@vnet.ibm.com
Final-Recipient: rfc822;arathib@vnet.ibm.com
Action: failed
Status: 5.0.0 (permanent failure)
Diagnostic-Code: smtp;  550 'arathib@vnet.IBM.COM' is not a
    registered gateway user
Remote-MTA: dns; vnet.ibm.com

Original-Recipient: rfc822;johnh@hpnjld.njd.hp.com
Final-Recipient: rfc822;johnh@hpnjld.njd.hp.com
Action: delayed
Status: 4.0.0 (hpnjld.njd.jp.com: host name lookup failure)

Original-Recipient: rfc822;wsnell@sdcc13.ucsd.edu
Final-Recipient: rfc822;wsnell@sdcc13.ucsd.edu
Action: failed
Status: 5.0.0
Diagnostic-Code: smtp; 550 user unknown
Remote-MTA: dns; sdcc13.ucsd.edu

--JAA13167.773673707/CS.UTK.EDU
content-type: message/rfc822

Message-Id: <199407081321.AA12345@cs.utk.edu>
Subject: test

body
--JAA13167.773673707/CS.UTK.EDU--
"""

EXCHANGE_DSN = """From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@example.com>
To: <monitor@lab.test>
Subject: Undeliverable: [health] mailops.health round trip %s
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="b1_exchange"
MIME-Version: 1.0

--b1_exchange
Content-Type: multipart/alternative; boundary="b2_exchange"

--b2_exchange
Content-Type: text/plain; charset="us-ascii"

Your message to nobody@example.com couldn't be delivered.
nobody wasn't found at example.com.

--b2_exchange
Content-Type: text/html; charset="us-ascii"

<html><body><p>Your message to nobody@example.com couldn't be delivered.</p></body></html>

--b2_exchange--

--b1_exchange
Content-Type: message/delivery-status

Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.com
Received-From-MTA: dns;mail.lab.test
Arrival-Date: Mon, 1 Jan 2024 10:00:01 +0000

Final-Recipient: rfc822;nobody@example.com
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient nobody@example.com not found by SMTP
 address lookup

--b1_exchange
Content-Type: message/rfc822

%s
--b1_exchange--
""" % (TOKEN, PROBE_MAIL)

QMAIL_BOUNCE = """Return-Path: <>
Date: 1 Jan 2024 10:00:05 -0000
From: MAILER-DAEMON@mx.example.net
To: monitor@lab.test
Subject: failure notice

Hi. This is the qmail-send program at mx.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<nobody@example.org>:
192.0.2.25 does not like recipient.
Remote host said: 550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in local recipient table
Giving up on 192.0.2.25.

--- Below this line is a copy of the message.

%s
Round-trip test mail sent by mailops.health.mail_roundtrip. It says 5.7.1 here.
""" % PROBE_HEADERS

QMAIL_LOCAL = """From: MAILER-DAEMON@mx.example.net
Subject: failure notice

Hi. This is the qmail-send program at mx.example.net.

<nobody@mx.example.net>:
Sorry, no mailbox here by that name. (#5.1.1)
"""

EXCHANGE_TEXT_NDR = """From: postmaster@example.com
To: monitor@lab.test
Subject: Undeliverable: test
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="ndr"

--ndr
Content-Type: text/plain; charset="us-ascii"

Your message did not reach some or all of the intended recipients.

      Subject: test
      Sent: 1/1/2024 10:00 AM

The following recipient(s) cannot be reached:

      nobody@example.com on 1/1/2024 10:00 AM
            The e-mail account does not exist at the organization this message was sent to.
            <mx.example.com #5.1.1 smtp;550 5.1.1 RESOLVER.ADR.RecipNotFound; not found>

--ndr
Content-Type: message/rfc822

%s
--ndr--
""" % PROBE_MAIL


def test_postfix_dsn_with_returned_headers():
    found = json_safe(delivery_status(crlf(POSTFIX_HEADERS_DSN)))
    assert set(found) == DSN_KEYS
    assert dict((key, found[key]) for key in DSN_KEYS - {'recipients', 'original_headers'}) == {
        'format': 'dsn', 'action': 'failed', 'status': '5.1.1',
        'diagnostic': "lmtp; 550 5.1.1 <nobody@lab.test>: User doesn't exist: nobody@lab.test",
        'recipient': 'nobody@lab.test', 'original_recipient': 'nobody@lab.test', 'reporting_mta': 'mail.lab.test',
        'remote_mta': '127.0.0.1', 'original_message_id': '<170410320100.1.1@probe.test>'}
    assert len(found['recipients']) == 1
    # The caller finds its token in the returned header, folded subject and all.
    assert token_of(parse_headers(found['original_headers'])) == TOKEN
    assert '%s: %s' % (TOKEN_HEADER, TOKEN) in found['original_headers']


def test_postfix_dsn_with_returned_message():
    found = delivery_status(crlf(POSTFIX_MESSAGE_DSN))
    assert (found['format'], found['action'], found['status']) == ('dsn', 'failed', '5.1.1')
    assert found['original_message_id'] == '<170410320100.1.1@probe.test>'
    assert token_of(parse_headers(found['original_headers'])) == TOKEN
    assert not any('Round-trip test mail' in line for line in found['original_headers'])


def test_postfix_delayed():
    found = delivery_status(crlf(POSTFIX_DELAYED))
    assert (found['action'], found['status'], found['diagnostic']) == ('delayed', '4.4.1', 'X-Postfix; 421 4.4.1 '
                                                                       "<nobody@lab.test>: User doesn't exist: "
                                                                       'nobody@lab.test')


def test_rfc3464_simple():
    found = delivery_status(RFC3464_SIMPLE)
    assert dict((key, found[key]) for key in ('format', 'action', 'status', 'diagnostic', 'recipient', 'reporting_mta',
                                              'original_message_id')) == {
        'format': 'dsn', 'action': 'failed', 'status': '4.0.0', 'diagnostic': 'smtp; 426 connection timed out',
        'recipient': 'louisl@larry.slip.umd.edu', 'reporting_mta': 'cs.utk.edu', 'original_message_id': None}


def test_rfc3464_several_recipients():
    found = delivery_status(RFC3464_MULTI)
    assert [(one['recipient'], one['action'], one['status']) for one in found['recipients']] == [
        ('arathib@vnet.ibm.com', 'failed', '5.0.0'), ('johnh@hpnjld.njd.hp.com', 'delayed', '4.0.0'),
        ('wsnell@sdcc13.ucsd.edu', 'failed', '5.0.0')]
    assert (found['recipient'], found['remote_mta']) == ('arathib@vnet.ibm.com', 'vnet.ibm.com')
    assert found['diagnostic'] == "smtp; 550 'arathib@vnet.IBM.COM' is not a registered gateway user"
    assert found['original_message_id'] == '<199407081321.AA12345@cs.utk.edu>'


def test_top_level_is_the_first_failed_recipient():
    delayed_first = RFC3464_MULTI.replace('Action: failed\nStatus: 5.0.0 (permanent failure)',
                                          'Action: delayed\nStatus: 4.4.7')
    assert delivery_status(delayed_first)['recipient'] == 'wsnell@sdcc13.ucsd.edu'


def test_exchange_dsn():
    found = delivery_status(crlf(EXCHANGE_DSN))
    assert (found['format'], found['status'], found['recipient']) == ('dsn', '5.1.10', 'nobody@example.com')
    assert found['reporting_mta'] == 'AM0PR01MB1234.eurprd01.prod.exchangelabs.com'
    assert found['diagnostic'].startswith('smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound;')
    assert found['diagnostic'].endswith('not found by SMTP address lookup')
    assert token_of(parse_headers(found['original_headers'])) == TOKEN


def test_qmail_plain_text_bounce():
    found = delivery_status(QMAIL_BOUNCE.encode())
    assert dict((key, found[key]) for key in ('format', 'action', 'status', 'diagnostic', 'recipient',
                                              'original_message_id')) == {
        'format': 'text', 'action': 'failed', 'status': '5.1.1',
        'diagnostic': 'Remote host said: 550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in '
                      'local recipient table',
        'recipient': 'nobody@example.org', 'original_message_id': '<170410320100.1.1@probe.test>'}
    assert token_of(parse_headers(found['original_headers'])) == TOKEN
    assert not any('Round-trip' in line for line in found['original_headers'])


def test_quoted_header_ends_at_its_first_other_line():
    text = QMAIL_BOUNCE.replace('charset="utf-8"\n\n', 'charset="utf-8"\n[message body omitted]\n')
    assert text != QMAIL_BOUNCE
    found = delivery_status(text)
    assert found['original_headers'][-1] == 'Content-Type: text/plain; charset="utf-8"'
    assert token_of(parse_headers(found['original_headers'])) == TOKEN


def test_qmail_local_bounce_code():
    found = delivery_status(QMAIL_LOCAL)
    assert (found['status'], found['action'], found['diagnostic'], found['recipient']) == (
        '5.1.1', 'failed', 'Sorry, no mailbox here by that name. (#5.1.1)', 'nobody@mx.example.net')
    assert found['original_headers'] == [] and found['original_message_id'] is None


def test_status_in_the_quoted_message_does_not_count():
    found = delivery_status(QMAIL_BOUNCE.replace('550 5.1.1 ', '550 '))
    assert found['format'] == 'text' and found['status'] is None and found['action'] is None


def test_exchange_plain_text_ndr():
    found = delivery_status(crlf(EXCHANGE_TEXT_NDR))
    assert (found['format'], found['action'], found['status']) == ('text', 'failed', '5.1.1')
    assert token_of(parse_headers(found['original_headers'])) == TOKEN


@pytest.mark.parametrize('form', ['bytes', 'str', 'str_lines', 'bytes_lines', 'crlf_bytes_lines'])
def test_bounce_input_forms_read_alike(form):
    text = POSTFIX_HEADERS_DSN
    given = {'bytes': crlf(text), 'str': text, 'str_lines': text.split('\n'),
             'bytes_lines': [line.encode() for line in text.split('\n')],
             'crlf_bytes_lines': [line.encode() + b'\r\n' for line in text.split('\n')]}[form]
    assert delivery_status(given) == delivery_status(crlf(text))


@pytest.mark.parametrize('message', [
    PROBE_MAIL,
    'Subject: the server said 550 5.1.1 to me\n\nand 5.1.1 again\n',
    'From: alice@example.com\nSubject: hello\nContent-Type: multipart/mixed; boundary=x\n\n--x\n\n5.1.1\n--x--\n',
    '', b'', b'\xff\xfe\x00', None, 42, [None],
])
def test_no_bounce_is_none(message):
    assert delivery_status(message) is None


def test_dsn_with_many_recipients_and_long_fields_is_cut():
    block = 'Final-Recipient: rfc822;u%d@example.com\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 ' + \
            'x' * 5000 + '\n\n'
    text = POSTFIX_HEADERS_DSN.replace('Final-Recipient: rfc822; nobody@lab.test',
                                       ''.join(block % n for n in range(10000)) + 'Final-Recipient: rfc822; z@lab.test')
    started = time.monotonic()
    found = json_safe(delivery_status(text))
    assert time.monotonic() - started < 10
    assert len(found['recipients']) <= _headers.MAX_ITEMS
    assert len(found['diagnostic']) == _headers.MAX_TEXT


def test_huge_bounce_is_read_up_to_the_cap():
    text = POSTFIX_HEADERS_DSN.replace('This is the mail system', 'x' * (6 * 1024 * 1024))
    found = delivery_status(text)
    # The report lies beyond MAX_MESSAGE: what is left is read as the plain-text bounce it looks like.
    assert found is not None and found['format'] == 'text'


def test_returned_header_with_many_lines_is_cut():
    text = POSTFIX_HEADERS_DSN.replace('Return-Path: <monitor@lab.test>',
                                       '\n'.join('X-Junk-%d: %s' % (n, 'y' * 3000) for n in range(2000)))
    found = delivery_status(text)
    assert len(found['original_headers']) == _headers.MAX_ORIGINAL_LINES
    assert max(len(line) for line in found['original_headers']) == _headers.MAX_TEXT


def test_deeply_nested_bounce_never_raises():
    depth = 2000
    head = ''.join('Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (n, n) for n in range(depth))
    text = 'From: MAILER-DAEMON@x\n' + head + 'Content-Type: text/plain\n\n550 5.1.1 no\n'
    found = delivery_status(text)
    assert found is None or found['status'] in (None, '5.1.1')
    # Within the depth limit the report is still found.
    nested = POSTFIX_HEADERS_DSN.replace('Content-Type: multipart/report', 'Content-Type: multipart/mixed; boundary="o"'
                                         '\n\n--o\nContent-Type: multipart/report', 1)
    assert delivery_status(nested)['format'] == 'dsn'


def test_non_utf8_bounce():
    raw = crlf(POSTFIX_HEADERS_DSN).replace(b"User doesn't exist:\r\n    nobody", b'Utilisateur \xe9\xff inconnu:\r\n    nobody')
    raw = raw.replace(b'Subject: [health]', b'Subject: \xff\xfe [health]').replace(b'Message-ID: <17', b'Message-ID: <\x00\xfe17')
    found = json_safe(delivery_status(raw))
    assert found['status'] == '5.1.1'
    assert '\ufffd' in found['diagnostic']
    assert found['original_message_id'].startswith('<\x00\ufffd17')


def test_random_bounces_never_raise():
    rnd = random.Random(3464)
    pieces = [crlf(POSTFIX_HEADERS_DSN), crlf(EXCHANGE_DSN), QMAIL_BOUNCE.encode(), b'\r\n--', b'Content-Type: ',
              b'message/delivery-status', b'multipart/report; boundary=', b'\xff', b'\x00', b'\r\n\r\n', b'5.1.1']
    for _n in range(200):
        blob = b''.join(rnd.choice(pieces)[:rnd.randint(0, 3000)] for _m in range(rnd.randint(1, 8)))
        found = delivery_status(blob)
        assert found is None or set(found) == DSN_KEYS
        json_safe(found)
