"""Hypothesis strategies for the hostile server: personas, explicit replies, steps, scripts.

Plausible material comes first in every one_of/sampled_from, so shrinking heads for the most
ordinary server that still fails. Nothing generated here contains a password: the secrets the
properties look for are fixed markers no strategy can produce (see test_fuzz.SECRETS). Servers
that quote them name a form instead (@SECRET:name@, Straddle, Echo; hostile_server.SECRET_FORMS)
and the server, told the secrets, fills it in as it sends.
"""

import base64

from hypothesis import strategies as st

from ansible_collections.mailops.health.plugins.module_utils._session import MAX_LINE

from hostile_server import (
    AUTO, CRLF, IMAP_ARRIVALS, IMAP_CAPABILITIES, IMAP_FETCH_FORMS, IMAP_FOLDERS, IMAP_IDLE_ENDS, IMAP_QUIRKS, LINE_CUT,
    SECRET_FORMS, Echo, ImapMessage, ImapPersona, Long, Message, Nest, Pop3Persona, Repeat, Script, SmtpPersona, Step,
    Straddle,
)

MIB = 1024 * 1024
# Characters str.isdigit() accepts besides 0-9: superscripts and circled digits (int() rejects
# them) and decimal digits of other scripts (int() accepts them).
ODD_DIGITS = '\u00b2\u00b3\u00b9\u2070\u2460\u0663\u06f5\u07c1\u0967\U0001d7d9\uff10'
CERT_KINDS = ('good',) * 8 + ('rogue', 'wrongname', 'expired', 'selfsigned', None)


def _utf8(text):
    return text.encode('utf-8')


def mostly(value, other):
    """value three times in four; shrinks to value."""
    return st.sampled_from([value, value, value, other])


def seldom_false():
    return st.sampled_from([True] * 7 + [False])


def pick(*weighted):
    """One of the strategies, chosen with the given weights; shrinks towards the first."""
    return st.sampled_from([strategy for weight, strategy in weighted for _copy in range(weight)]).flatmap(
        lambda strategy: strategy)


# Ten digits for personas that number things oddly (codes, message numbers, sizes): one script's
# digits (fullwidth, Arabic-Indic: int() reads them), or a mix of look-alikes from ODD_DIGITS.
digit_set = pick(
    (16, st.none()),
    (1, st.sampled_from(['\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19',
                         '\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669'])),
    (3, st.text(alphabet=st.sampled_from(ODD_DIGITS), min_size=10, max_size=10)),
)
digit = st.one_of(st.sampled_from('0123456789'), st.sampled_from(ODD_DIGITS))
any_text = st.text(max_size=40).map(_utf8)
ascii_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(_utf8)
bad_utf8 = st.sampled_from([b'\xff', b'\xfe\xff', b'\xc3', b'\xed\xa0\x80', b'\xf4\x90\x80\x80', b'\xc0\xaf',
                            b'\x80\x80', b'\xe2\x82', b'\x00'])
noisy_text = st.lists(st.one_of(ascii_text, any_text, bad_utf8), max_size=4).map(b''.join)
line_end = st.sampled_from([CRLF, CRLF, CRLF, b'\n', b'\r', b'', b'\r\r\n', b'\n\r'])
number = st.one_of(
    st.integers(0, 10 ** 6).map(lambda n: b'%d' % n),
    st.text(alphabet=digit, min_size=1, max_size=4).map(_utf8),
    st.sampled_from([b'-1', b'', b'1e3', b'0x10', b'99999999999999999999999', b'+1', b'1.5']),
)
assert LINE_CUT == MAX_LINE, "Straddle lines must put the secret across the core's cut"


# -- the secrets, quoted back ---------------------------------------------------------------
def forms_of(protocol):
    """A form of the secrets, mostly of the protocol's own (a server that knows the other
    protocol's password too, as one account database would, now and then)."""
    pairs = (('pop3', 'apop'), ('imap', 'cram'))
    own = [form for form in SECRET_FORMS if form.startswith(protocol) or (protocol, form) in pairs]
    return st.sampled_from(own * 3 + list(SECRET_FORMS))


def placeholder(form):
    return b'@SECRET:' + form.encode('ascii') + b'@'


def secret_text(protocol):
    """Text around a placeholder (or two)."""
    return st.tuples(st.one_of(st.just(b''), ascii_text, noisy_text), forms_of(protocol).map(placeholder),
                     st.sampled_from([b'', b' ', b'=', b'\x00', b'\xff']),
                     st.one_of(st.just(b''), forms_of(protocol).map(placeholder), ascii_text)).map(b''.join)


def straddle(protocol, heads, then=(b'',)):
    """A Straddle line, maybe followed by one of then (the last line of a multi-line reply)."""
    return st.builds(Straddle, head=st.sampled_from(heads), form=forms_of(protocol),
                     end=st.tuples(st.sampled_from([CRLF, CRLF, b'\n', b'']), st.sampled_from(then)).map(b''.join))


MOMENTS = {'smtp': ['greeting', 'EHLO', 'HELO', 'STARTTLS', 'AUTH', 'MAIL', 'RCPT', 'DATA', 'DATA-END', 'QUIT', ''],
           'pop3': ['greeting', 'CAPA', 'STLS', 'USER', 'PASS', 'APOP', 'STAT', 'UIDL', 'LIST', 'TOP', 'RETR', 'DELE',
                    'QUIT'],
           'imap': ['greeting', 'CAPABILITY', 'STARTTLS', 'LOGIN', 'AUTHENTICATE', 'AUTH-ANSWER', 'LIST', 'STATUS',
                    'SELECT', 'NOOP', 'UID SEARCH', 'UID FETCH', 'UID STORE', 'UID EXPUNGE', 'UID MOVE', 'IDLE', 'PUSH',
                    'DONE', 'LOGOUT']}


def echo(protocol):
    """Mostly no echo; else some forms quoted and maybe one across the line cut, everywhere or
    at a few moments of the dialogue."""
    echoing = st.builds(Echo, forms=st.lists(forms_of(protocol), max_size=4),
                        straddle=st.one_of(st.none(), forms_of(protocol)),
                        where=st.one_of(st.none(), st.sets(st.sampled_from(MOMENTS[protocol]), min_size=1, max_size=4)))
    return pick((3, st.none()), (2, echoing))


# -- protocol-agnostic garbage ------------------------------------------------------------
long_line = st.builds(
    Long,
    prefix=st.sampled_from([b'250 ', b'250-', b'+OK ', b'', b'-ERR ', b'1 ']),
    fill=st.sampled_from([b'x', b'\xff', b' ', b'\xc3', b'-']),
    size=st.one_of(st.sampled_from([MAX_LINE - 16, MAX_LINE, MAX_LINE + 1, 2 * MIB]),
                   st.integers(1000, 2 * MIB)),
    end=st.sampled_from([CRLF, b'\n', b'']),
)
flood = st.builds(
    Repeat,
    head=st.sampled_from([b'', b'+OK\r\n', b'250-x\r\n']),
    line=st.sampled_from([b'250-x\r\n', b'1 uid\r\n', b'TOP\r\n', b'X-H: v\r\n', b'..\r\n', b'\r\n']),
    count=st.integers(1, 50000),
    tail=st.sampled_from([b'', b'.\r\n', b'250 end\r\n']),
)
garbage = st.one_of(
    st.sampled_from([b'', CRLF, b'\n', b'\r', b'\x00\r\n', b'.\r\n', b'..\r\n', b' \r\n', b'\r\n\r\n',
                     b'\x16\x03\x01\x00\x05hello\r\n']),
    st.binary(max_size=80),
    st.binary(max_size=80).map(lambda data: data + CRLF),
    st.tuples(noisy_text, line_end).map(b''.join),
    long_line,
    flood,
)

# -- SMTP ---------------------------------------------------------------------------------
smtp_code = st.one_of(
    st.sampled_from([b'250', b'220', b'221', b'235', b'251', b'334', b'354', b'421', b'450', b'500', b'502',
                     b'530', b'535', b'550', b'554', b'099', b'999', b'000']),
    st.text(alphabet=st.one_of(digit, st.sampled_from('aZ -.')), max_size=4).map(_utf8),
)
smtp_plausible = st.sampled_from([
    b'250 OK\r\n', b'220 ready\r\n', b'250-a\r\n250 b\r\n', b'235 2.7.0 ok\r\n', b'334 \r\n', b'334\r\n',
    b'334 VXNlcm5hbWU6\r\n', b'334 PDEyMy40NTZAaG9zdD4=\r\n', b'334 !!notbase64\r\n', b'334 \xc3\xa9t\xc3\xa9\r\n',
    b'334 PDEy Mz4=\r\n', b'354 go ahead\r\n', b'250 2.0.0 Ok: queued as ABC123\r\n', b'250 queued as\r\n',
    b'221 bye\r\n', b'421 4.3.2 shutting down\r\n', b'535 5.7.8 no\r\n', b'550 5.1.1 no such user\r\n',
    b'220 2.0.0 Ready to start TLS\r\n', b'250-mx\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN CRAM-MD5\r\n250 OK\r\n',
    b'250-mx\r\n250 AUTH\r\n', b'250-\r\n250 \r\n', b'250\r\n', b'250-x\r\n', b'250-x\r\n251 y\r\n',
    # isdigit() but not int(): superscript two, twice as a code.
    b'\xc2\xb2\xc2\xb2\xc2\xb2 ok\r\n', b'2\xc2\xb25 ok\r\n',
    # Arabic-Indic 250.
    b'\xd9\xa2\xd9\xa5\xd9\xa0 ok\r\n',
])


@st.composite
def smtp_reply(draw):
    """One to four reply lines: well formed (one code, '-' then ' ', CRLF) or anything."""
    texts = draw(st.lists(noisy_text, min_size=1, max_size=4))
    code = draw(smtp_code)
    if draw(st.booleans()):
        lines = [code + draw(st.sampled_from([b' ', b'-', b'', b'x', b'\t'])) + text + draw(line_end)
                 for text in texts]
    else:
        lines = [code + b'-' + text + CRLF for text in texts[:-1]] + [code + b' ' + texts[-1] + CRLF]
    return b''.join(lines)


smtp_secret_reply = st.one_of(
    st.tuples(smtp_code, st.sampled_from([b' ', b'-']), secret_text('smtp'), line_end).map(b''.join),
    st.tuples(st.sampled_from([b'235 2.7.0 ', b'250 2.0.0 Ok: queued as ', b'221 2.0.0 ', b'535 5.7.8 ',
                               b'250-mx.fuzz.test\r\n250 AUTH PLAIN ', b'220 mx ', b'334 ']),
              secret_text('smtp'), st.just(CRLF)).map(b''.join),
    straddle('smtp', [b'250-', b'250 ', b'235-', b'220-', b'221 ', b'535 ', b'', b'554 ']),
    straddle('smtp', [b'250-', b'235-', b'221-'], then=[b'250 ok\r\n', b'235 ok\r\n', b'221 bye\r\n']),
)
smtp_explicit = st.one_of(smtp_plausible, smtp_reply(), garbage, smtp_secret_reply)

smtp_feature = st.one_of(
    st.sampled_from([b'PIPELINING', b'STARTTLS', b'AUTH PLAIN LOGIN CRAM-MD5', b'AUTH=PLAIN LOGIN', b'AUTH CRAM-MD5',
                     b'AUTH LOGIN', b'AUTH PLAIN', b'AUTH', b'AUTH=', b'AUTH XOAUTH2 GSSAPI', b'auth cram-md5 plain',
                     b'starttls', b'SIZE 10240000', b'8BITMIME', b'ENHANCEDSTATUSCODES', b'SMTPUTF8', b'',
                     b'AUTH PLAIN PLAIN PLAIN', b'STARTTLS extra']),
    noisy_text,
)
challenge = pick(
    (4, st.just(b'PDEyMzQ1LjY3ODlAbXguZnV6ei50ZXN0Pg==')),
    (1, st.sampled_from([b'', b'!!!', b'PDE=', b'\xc3\xa9', b'PDEyMz Q1Pg==', b'====',
                         b'PDEyMzQ1LjY3ODlAbXguZnV6ei50ZXN0Pg'])),
    (2, st.binary(max_size=48).map(base64.b64encode)),
    (1, noisy_text),
)
TYPICAL_FEATURES = [b'PIPELINING', b'SIZE 10240000', b'STARTTLS', b'AUTH PLAIN LOGIN CRAM-MD5', b'8BITMIME']


@st.composite
def some_of(draw, typical, extra):
    """Usually the typical list, sometimes with entries dropped, sometimes with extras mixed in."""
    items = list(typical)
    for index in sorted(draw(st.lists(st.integers(0, len(items) - 1), max_size=3, unique=True)), reverse=True):
        del items[index]
    for entry in draw(st.lists(extra, max_size=4)):
        items.insert(draw(st.integers(0, len(items))), entry)
    return items


host = pick((4, st.just(b'mx.fuzz.test')),
            (1, st.sampled_from([b'', b'\xc3\xbcml\xc3\xa4ut.test', b'\xff\xfe', b'a' * 300])), (1, noisy_text),
            (1, st.sampled_from(SECRET_FORMS).map(lambda form: b'mx.' + placeholder(form) + b'.test')))
smtp_persona = st.builds(
    SmtpPersona,
    host=host,
    features=pick((3, some_of(TYPICAL_FEATURES, smtp_feature)), (1, st.lists(smtp_feature, max_size=8))),
    challenge=challenge,
    auth_ok=seldom_false(),
    queue_id=st.sampled_from([b'4XyZ9', b'', b'!', b'\xff', b'ABC DEF']),
    cert=st.sampled_from(CERT_KINDS),
    digits=digit_set,
    echo=echo('smtp'),
)

# -- POP3 ---------------------------------------------------------------------------------
pop3_plausible = st.sampled_from([
    b'+OK\r\n', b'-ERR no\r\n', b'+OK 1 100\r\n', b'+OK 0 0\r\n', b'+OK \xc2\xb2 3\r\n', b'+OK 1 \xe2\x91\xa0\r\n',
    b'+OK 1\r\n', b'+OK a b\r\n', b'+OK\r\n1 uid-1\r\n.\r\n', b'+OK\r\n\xc2\xb2 uid\r\n.\r\n', b'+OK\r\n1\r\n.\r\n',
    b'+OK\r\n.\r\n', b'+OK\r\n1 uid\r\n1 uid\r\n.\r\n', b'+OK\r\n\xd9\xa1 uid\r\n.\r\n',
    b'+OK\r\nSubject: mailops.health round trip @TOKEN@\r\nX-Mailops-Roundtrip: @TOKEN@\r\n\r\n.\r\n',
    b'+OK\r\nX-Mailops-Roundtrip: @TOKEN@\r\n.\r\n', b'+OK <1.2@h>\r\n', b'+OK\r\nTOP\r\nUIDL\r\nSTLS\r\n.\r\n',
    b'+OK\r\n..\r\n.\r\n', b'+OK Begin TLS\r\n', b'+OK\r\n\r\n.\r\n', b'+OKAY\r\n', b'+ok\r\n', b'-ERR\r\n',
])


@st.composite
def pop3_status(draw):
    return (draw(st.sampled_from([b'+OK', b'-ERR', b'+OK ', b'-ERR ', b'+ok', b'+OKAY', b'OK', b'+', b'']))
            + draw(st.one_of(noisy_text, st.tuples(number, st.just(b' '), number).map(b''.join)))
            + draw(line_end))


@st.composite
def pop3_multiline(draw):
    first = draw(st.sampled_from([b'+OK', b'+OK listing follows', b'-ERR', b'+OK \xff']))
    line = st.one_of(
        st.tuples(number, st.sampled_from([b' ', b'  ', b'\t', b'']), st.one_of(ascii_text, noisy_text))
        .map(b''.join),
        st.sampled_from([b'.', b'..', b'.x', b'', b'TOP', b'STLS', b'Subject: @TOKEN@',
                         b'X-Mailops-Roundtrip: @TOKEN@']),
        noisy_text,
    )
    lines = draw(st.lists(line, max_size=6))
    end = draw(st.sampled_from([b'.\r\n', b'.\r\n', b'. \r\n', b'', b'.\n', b'..\r\n']))
    return first + CRLF + b''.join(entry + draw(line_end) for entry in lines) + end


pop3_secret_reply = st.one_of(
    st.tuples(st.sampled_from([b'+OK ', b'-ERR ', b'-ERR [AUTH] ', b'+OK 1 ', b'+OK maildrop ', b'']),
              secret_text('pop3'), line_end).map(b''.join),
    st.tuples(st.sampled_from([b'+OK\r\n', b'+OK listing\r\n1 ']), secret_text('pop3'),
              st.just(CRLF + b'.' + CRLF)).map(b''.join),
    straddle('pop3', [b'+OK ', b'-ERR ', b'+OK 1 100 ', b'', b'-ERR [AUTH] ']),
)
pop3_explicit = st.one_of(pop3_plausible, pop3_status(), pop3_multiline(), garbage, pop3_secret_reply)

OURS = [
    [b'Subject: [health] mailops.health round trip @TOKEN@', b'X-Mailops-Roundtrip: @TOKEN@'],
    [b'Subject: mailops.health round trip @TOKEN@', b'X-Mailops-Roundtrip: @TOKEN@', b'X-Mailops-Roundtrip: @TOKEN@'],
    [b'Subject: mailops.health round trip @TOKEN@', b'X-Mailops-Roundtrip: 0123456789abcdef0123456789abcdef'],
    [b'Subject: nothing to see', b'X-Mailops-Roundtrip: @TOKEN@'],
    [b'Subject: folded @TOKEN@', b'X-Mailops-Roundtrip:', b' @TOKEN@'],
    [b'subject: @TOKEN@', b'x-mailops-roundtrip: @TOKEN@'],
    [b'.Subject: @TOKEN@', b'X-Mailops-Roundtrip: @TOKEN@'],
    [b'Subject: @TOKEN@ \xff\xfe', b'X-Mailops-Roundtrip: @TOKEN@\xff'],
    [b'X-Mailops-Roundtrip: @TOKEN@', b'Subject: =?utf-8?q?@TOKEN@?='],
    [b'Subject @TOKEN@', b'X-Mailops-Roundtrip @TOKEN@'],
    [b'', b'Subject: @TOKEN@', b'X-Mailops-Roundtrip: @TOKEN@'],
]
header_line = st.one_of(
    st.sampled_from([b'From: someone@fuzz.test', b'Subject: hello', b'Received: from x', b' folded continuation',
                     b'X-Mailops-Roundtrip:', b'Subject:', b':', b'.', b'..']),
    noisy_text,
)
headers = st.one_of(
    st.sampled_from(OURS),
    st.lists(header_line, max_size=6),
    st.tuples(st.sampled_from(OURS), st.lists(header_line, max_size=3)).map(lambda pair: pair[0] + pair[1]),
)
uid = st.one_of(st.sampled_from([b'uid-1', b'uid-2', b'uid-3']),
                st.sampled_from([b'', b'x' * 100, b'\xff', b'a b', b'uid-ours', b'\xc2\xb2']), noisy_text)
message = st.builds(Message, uid=uid, headers=headers, arrives=st.booleans(),
                    size=st.one_of(st.none(), st.integers(0, 10 ** 12)))
OLD_TOKEN = b'0123456789abcdef0123456789abcdef'
date = st.one_of(
    st.sampled_from([b'Mon, 01 Jan 2024 00:00:00 +0000', b'Thu, 01 Jan 1970 00:00:00 +0000', b'', b'garbage',
                     b'Mon, 99 Foo 99999 99:99:99 +9999', b'01 Jan 0001 00:00:00', b'Fri, 31 Dec 9999 23:59:59 -2359',
                     b'Sat, 01 Jan 2124 00:00:00 +0000']),
    noisy_text,
)
# A leftover of an earlier probe (cleanup_stale deletes it when its Date is old enough).
stale = st.builds(lambda uid, when: Message(uid, [b'Subject: [health] mailops.health round trip ' + OLD_TOKEN,
                                                  b'X-Mailops-Roundtrip: ' + OLD_TOKEN, b'Date: ' + when]),
                  st.sampled_from([b'uid-stale-1', b'uid-stale-2']), date)
foreign = st.one_of(
    st.builds(Message, uid=st.sampled_from([b'uid-1', b'uid-2', b'uid-3', b'uid-4']),
              headers=st.sampled_from([[b'Subject: hello', b'From: a@fuzz.test'],
                                       [b'Subject: [health] mailops.health round trip'] + OURS[2][1:]]),
              arrives=st.booleans()),
    stale,
)


@st.composite
def mailbox(draw):
    """Our own mail arriving after the send among others (shrinks to that), a mailbox where it
    never arrives (the round trip runs into max_trip_time), or anything."""
    kind = draw(st.sampled_from(['ours'] * 6 + ['never', 'anything', 'anything']))
    if kind == 'never':
        return draw(st.lists(foreign, max_size=3, unique_by=lambda m: m.uid))
    messages = draw(st.lists(message if kind == 'anything' else foreign, max_size=4))
    if kind == 'ours' or draw(st.booleans()):
        # Usually one copy; a mail can arrive twice (every copy is ours to delete).
        for copy in range(draw(st.sampled_from([1, 1, 1, 2]))):
            ours = Message(b'uid-ours-%d' % copy, OURS[0], arrives=True)
            messages.insert(draw(st.integers(0, len(messages))), ours)
    return messages


capability = st.one_of(
    st.sampled_from([b'TOP', b'UIDL', b'USER', b'STLS', b'stls', b'SASL PLAIN', b'PIPELINING', b'RESP-CODES',
                     b'IMPLEMENTATION hostile', b'.', b'..', b'', b'STLS now']),
    noisy_text,
)
timestamp = pick(
    (4, st.just(b'<1896.697170952@pop.fuzz.test>')),
    (1, st.none()),
    (1, noisy_text),
    (1, st.sampled_from([b'<>', b'<a b>', b'<\xc3\xa9@x>', b'<<x>>', b'<' + b'x' * 1000 + b'>', b'<\xff@x>'])),
)
TYPICAL_CAPABILITIES = [b'TOP', b'UIDL', b'USER', b'STLS', b'SASL PLAIN', b'RESP-CODES']
pop3_persona = st.builds(
    Pop3Persona,
    host=host,
    timestamp=timestamp,
    capabilities=pick((4, some_of(TYPICAL_CAPABILITIES, capability)), (1, st.lists(capability, max_size=8)),
                      (1, st.none())),
    login_ok=seldom_false(),
    messages=mailbox(),
    uidl_ok=seldom_false(),
    top_ok=seldom_false(),
    dele_ok=seldom_false(),
    stat=pick((3, st.none()), (1, st.tuples(number, st.sampled_from([b' ', b'', b'  ']), number).map(b''.join)),
              (1, noisy_text)),
    cert=st.sampled_from(CERT_KINDS),
    locked_sessions=st.sampled_from([0] * 12 + [1, 2, 100]),
    digits=digit_set,
    echo=echo('pop3'),
)

# -- IMAP ---------------------------------------------------------------------------------
# Replies say @TAG@ for the tag of the command they answer, @NEXT@ for the client's next tag and
# @UID@ for the UID of the probe's own mail (hostile_server fills them in).
TOKEN_GROWTH = 32 - len(b'@TOKEN@')  # a literal's size counts the token the server fills in


def literal(data, delta=0):
    """data as an IMAP literal whose announced size is delta bytes off."""
    return b'{%d}\r\n' % max(0, len(data) + data.count(b'@TOKEN@') * TOKEN_GROWTH + delta) + data


OUR_HEADER = b'\r\n'.join(OURS[0]) + b'\r\n\r\n'
imap_plausible = st.sampled_from([
    b'@TAG@ OK done\r\n', b'@TAG@ NO [UNAVAILABLE] try later\r\n', b'@TAG@ BAD syntax error\r\n',
    b'@TAG@ OK [CAPABILITY IMAP4rev1 AUTH=PLAIN IDLE] logged in\r\n', b'@TAG@ NO [AUTHENTICATIONFAILED] no\r\n',
    b'* OK ready\r\n', b'* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n', b'* PREAUTH ready\r\n',
    b'* BYE going away\r\n', b'* BYE\r\n', b'* NO [ALERT] disk full\r\n', b'* BAD what\r\n',
    b'+ \r\n', b'+\r\n', b'+ go ahead\r\n', b'+ PDEyMy40NTZAaG9zdD4=\r\n', b'+ !!notbase64\r\n', b'+ \xc3\xa9t\xc3\xa9\r\n',
    b'* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN AUTH=CRAM-MD5 IDLE UIDPLUS MOVE\r\n@TAG@ OK\r\n',
    b'* CAPABILITY IMAP4rev1 LOGINDISABLED\r\n@TAG@ OK\r\n', b'* CAPABILITY\r\n@TAG@ OK\r\n',
    b'* LIST (\\HasNoChildren \\Junk) "/" Junk\r\n* LIST () "/" INBOX\r\n@TAG@ OK\r\n',
    b'* LIST (\\Junk "/" Junk\r\n@TAG@ OK\r\n', b'* LIST () NIL NIL\r\n@TAG@ OK\r\n',
    b'* LIST (\\Trash) "/" {5}\r\nTrash\r\n@TAG@ OK\r\n', b'* LIST (\\Junk) "/" "Spam \\"x\\" \\\\"\r\n@TAG@ OK\r\n',
    b'* LIST (\\Junk) "/" Ind&AOk-sirables\r\n@TAG@ OK\r\n', b'* LIST ((\\Junk)) "/" Junk\r\n@TAG@ OK\r\n',
    b'* STATUS INBOX (MESSAGES 1 UIDNEXT 5)\r\n@TAG@ OK\r\n', b'* STATUS "INBOX" (UIDNEXT)\r\n@TAG@ OK\r\n',
    b'* STATUS Junk (UIDNEXT x)\r\n@TAG@ OK\r\n', b'* STATUS Junk ()\r\n@TAG@ OK\r\n', b'* STATUS Junk\r\n@TAG@ OK\r\n',
    b'* STATUS Junk (UIDNEXT (1))\r\n@TAG@ OK\r\n', b'* STATUS Junk (UIDNEXT \xd9\xa3)\r\n@TAG@ OK\r\n',
    b'* 3 EXISTS\r\n* OK [UIDNEXT 5] next\r\n@TAG@ OK [READ-WRITE] selected\r\n', b'* OK [UIDNEXT \xc2\xb2]\r\n@TAG@ OK\r\n',
    b'* OK [UIDNEXT 99999999999999999999999]\r\n@TAG@ OK\r\n', b'* OK [UIDNEXT 0]\r\n@TAG@ OK\r\n',
    b'* SEARCH\r\n@TAG@ OK\r\n', b'* SEARCH @UID@\r\n@TAG@ OK\r\n', b'* SEARCH 1 2 x\r\n@TAG@ OK\r\n',
    b'* SEARCH \xc2\xb2\r\n@TAG@ OK\r\n', b'* SEARCH \xd9\xa3\r\n@TAG@ OK\r\n', b'* SEARCH (1)\r\n@TAG@ OK\r\n',
    b'* SEARCH NIL\r\n@TAG@ OK\r\n', b'* SEARCH -1\r\n@TAG@ OK\r\n', b'* SEARCH 99999999999999999999\r\n@TAG@ OK\r\n',
    b'* SEARCH @UID@ @UID@ @UID@\r\n@TAG@ OK\r\n', b'* SEARCH "@UID@"\r\n@TAG@ OK\r\n', b'* SEARCH {2}\r\n12\r\n@TAG@ OK\r\n',
    b'* 1 FETCH (UID @UID@ BODY[HEADER] ' + literal(OUR_HEADER) + b')\r\n@TAG@ OK\r\n',
    b'* 1 FETCH (UID @UID@ BODY[HEADER] ' + literal(OUR_HEADER, 7) + b')\r\n@TAG@ OK\r\n',
    b'* 1 FETCH (UID @UID@ BODY[HEADER] ' + literal(OUR_HEADER, -7) + b')\r\n@TAG@ OK\r\n',
    b'* 1 FETCH (UID @UID@ BODY[HEADER] NIL)\r\n@TAG@ OK\r\n',
    b'* 1 FETCH (UID @UID@ BODY[HEADER] (a (b) "c"))\r\n@TAG@ OK\r\n', b'* 1 FETCH (UID @UID@ BODY[HEADER] ""\r\n@TAG@ OK\r\n',
    b'* 1 FETCH (UID @UID@ BODY[HEADER] "X-Mailops-Roundtrip: @TOKEN@")\r\n@TAG@ OK\r\n',
    b'* 1 FETCH UID 5\r\n@TAG@ OK\r\n', b'* 1 FETCH ((()))\r\n@TAG@ OK\r\n', b'* 1 FETCH (UID @UID@ BODY[HEADER] {5}\r\n',
    b'* 1 FETCH (UID @UID@ UID 7 BODY[HEADER] ' + literal(OUR_HEADER) + b')\r\n@TAG@ OK\r\n',
    b'* 1 FETCH (UID @UID@ BODY[HEADER] ' + literal(OUR_HEADER) + b' BODY[HEADER] ' + literal(b'X: y\r\n') + b')\r\n'
    b'@TAG@ OK\r\n',
    b'* 1 FETCH (FLAGS (\\Deleted))\r\n@TAG@ OK\r\n', b'* OK [COPYUID 1 @UID@ 9]\r\n* 1 EXPUNGE\r\n@TAG@ OK\r\n',
    # Tags: wrong, early, twice, before the data, missing, glued, lower case.
    b'A999 OK wrong tag\r\n', b'@NEXT@ OK too early\r\n', b'@TAG@ OK\r\n@TAG@ OK\r\n', b'@TAG@ OK\r\n* SEARCH @UID@\r\n',
    b'OK no tag\r\n', b'@TAG@OK\r\n', b'@TAG@  OK\r\n', b'@TAG@ \r\n', b'@TAG@\r\n', b'* @TAG@ OK\r\n',
    b'@TAG@ FOO bar\r\n', b'@TAG@ PREAUTH\r\n', b'@TAG@ BYE\r\n', b'a001 ok\r\n', b'@TAG@ ok [] \r\n',
    b'@TAG@ OK [CAPABILITY\r\n', b'@TAG@ OK\r\n@NEXT@ OK\r\n',
    # What IDLE may bring.
    b'+ idling\r\n', b'+ idling\r\n* 4 EXISTS\r\n', b'* 4 EXISTS\r\n', b'* 1 EXPUNGE\r\n', b'* 1 RECENT\r\n',
    b'* OK still here\r\n', b'* 4 EXISTS\r\n@TAG@ OK IDLE done\r\n',
])
imap_tags = st.sampled_from([b'@TAG@', b'@TAG@', b'@TAG@', b'*', b'+', b'@NEXT@', b'A999', b'', b'a001', b'@TAG@@TAG@',
                             b'\xff', b'(', b'@TAG@ @TAG@'])
imap_words = st.sampled_from([b'OK', b'OK', b'NO', b'BAD', b'BYE', b'PREAUTH', b'ok', b'', b'OKAY', b'CAPABILITY'])
imap_code = st.sampled_from([b'', b'', b'[CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ', b'[UIDNEXT 7] ', b'[ALERT] ',
                             b'[', b'[] ', b'[UIDNEXT] ', b'[READ-WRITE] ', b'[CAPABILITY] ', b'[UIDNEXT \xd9\xa3] ',
                             b'[UIDNEXT 7', b'[[x]] '])


@st.composite
def imap_status(draw):
    """One status line: any tag (right, wrong, none), any status word, maybe a response code."""
    return (draw(imap_tags) + b' ' + draw(imap_words) + b' ' + draw(imap_code) + draw(noisy_text)
            + draw(line_end))


imap_quoted = st.sampled_from([b'""', b'"a b"', b'"a\\"b"', b'"\\\\"', b'"\\', b'"unterminated', b'"\xff\xfe"',
                               b'"@UID@"', b'"\\x"', b'"INBOX"'])
imap_leaf = st.one_of(
    st.sampled_from([b'NIL', b'nil', b'1', b'@UID@', b'0', b'-1', b'99999999999999999999', b'\\Junk', b'\\Trash',
                     b'BODY[HEADER]', b'BODY[', b'UID', b'[', b']', b'{', b'}', b'{3}', b'"', b'\xc2\xb2']),
    imap_quoted,
    ascii_text.filter(lambda text: b'\r' not in text and b'\n' not in text),
    bad_utf8,
)


def _imap_list(items):
    return st.tuples(st.sampled_from([(b'(', b')'), (b'(', b')'), (b'(', b''), (b'', b')'), (b'((', b')')]),
                     st.lists(items, max_size=4)).map(lambda pair: pair[0][0] + b' '.join(pair[1]) + pair[0][1])


imap_value = st.recursive(imap_leaf, _imap_list, max_leaves=12)


@st.composite
def imap_data(draw):
    """An untagged data line: a keyword the client looks for, odd values (lists nested or
    unbalanced, NIL, quoted strings with escapes, literals that lie), maybe the tagged reply."""
    number = draw(st.sampled_from([b'', b'', b'1 ', b'@UID@ ', b'0 ', b'\xc2\xb2 ']))
    keyword = draw(st.sampled_from([b'SEARCH', b'LIST', b'STATUS', b'CAPABILITY', b'FETCH', b'EXISTS', b'EXPUNGE',
                                    b'FLAGS', b'OK', b'RECENT', b'BYE']))
    values = draw(st.lists(imap_value, max_size=5))
    line = b'* ' + number + keyword + b''.join(b' ' + value for value in values)
    if draw(st.booleans()):
        data = draw(st.sampled_from([b'', b'X: y\r\n', OUR_HEADER, b'\xff\xfe']))
        line += b' ' + literal(data, draw(st.sampled_from([0, 0, -1, 1, 100]))) + draw(
            st.sampled_from([b')', b'', b' UID @UID@)']))
    return line + draw(line_end) + draw(st.sampled_from([b'', b'@TAG@ OK done\r\n']))


imap_literal_lie = st.builds(
    lambda data, delta, end: b'* 1 FETCH (UID @UID@ BODY[HEADER] ' + literal(data, delta) + end,
    st.sampled_from([OUR_HEADER, b'', b'X: y\r\n']),
    st.sampled_from([-1, -10, 1, 2, 100, 10 ** 6, 16 * MIB, 16 * MIB + 1, 10 ** 20]),
    st.sampled_from([b')\r\n@TAG@ OK\r\n', b'', b')\r\n']),
)
imap_nest = st.builds(
    Nest,
    head=st.sampled_from([b'* ', b'* SEARCH ', b'* LIST ', b'* 1 FETCH ', b'* STATUS INBOX ', b'* CAPABILITY ',
                          b'* OK ', b'* ']),
    depth=st.sampled_from([2, 50, 500, 1000, 5000, 30000]),
    inner=st.sampled_from([b'', b'1', b'NIL', b'"x"']),
    missing=st.sampled_from([0, 0, 0, 1]),
    tail=st.sampled_from([CRLF + b'@TAG@ OK\r\n', CRLF]),
)
imap_long = st.builds(
    Long,
    prefix=st.sampled_from([b'* OK ', b'@TAG@ OK ', b'@TAG@ NO ', b'* SEARCH ', b'+ ', b'* CAPABILITY ',
                            b'* LIST () "/" "', b'* BYE ', b'']),
    fill=st.sampled_from([b'x', b'\xff', b' ', b'1 ', b'(', b'{1}', b'"']),
    size=st.one_of(st.sampled_from([MAX_LINE - 16, MAX_LINE, MAX_LINE + 1, 2 * MIB]), st.integers(1000, 2 * MIB)),
    end=st.sampled_from([CRLF, CRLF + b'@TAG@ OK\r\n', b'\n', b'']),
)
imap_secret_reply = st.one_of(
    st.tuples(st.sampled_from([b'@TAG@ NO ', b'@TAG@ BAD ', b'@TAG@ OK ', b'* OK ', b'* BYE ', b'+ ', b'* NO [ALERT] ',
                               b'@TAG@ NO [AUTHENTICATIONFAILED] ', b'* CAPABILITY IMAP4rev1 ', b'']),
              secret_text('imap'), line_end).map(b''.join),
    st.tuples(st.sampled_from([b'* LIST (\\Junk) "/" ', b'* SEARCH ', b'* STATUS ']), secret_text('imap'),
              st.just(CRLF + b'@TAG@ OK\r\n')).map(b''.join),
    straddle('imap', [b'@TAG@ NO ', b'@TAG@ OK ', b'* OK ', b'* BYE ', b'+ ', b'* CAPABILITY ', b'', b'* SEARCH ']),
    straddle('imap', [b'* OK ', b'* NO ', b'* CAPABILITY '], then=[b'@TAG@ OK done\r\n', b'@TAG@ NO no\r\n']),
)
# BODY[HEADER] as a FETCH answer may give it, and as it must not.
imap_header_value = st.one_of(
    st.sampled_from([OUR_HEADER, b'X: y\r\n\r\n', b'']).flatmap(
        lambda data: st.sampled_from([0, 0, 0, -1, 1]).map(lambda delta: literal(data, delta))),
    st.sampled_from([b'NIL', b'""', b'"X-Mailops-Roundtrip: @TOKEN@"', b'(X-Mailops-Roundtrip @TOKEN@)', b'()',
                     b'((a) b)', b'X-Mailops-Roundtrip:@TOKEN@', b'42', b'{', b'"\\"', b'BODY[HEADER]']),
    imap_value,
)


@st.composite
def imap_fetch_reply(draw):
    """An answer to UID FETCH: usually the UID and BODY[HEADER] among other items, in any order,
    some missing or twice; BODY[HEADER] as a literal, NIL, a quoted string, a list, an atom or a
    number; UIDs right or not."""
    items = ['uid', 'header'] + draw(st.lists(st.sampled_from(['uid', 'header', 'flags', 'size', 'stray']),
                                              max_size=3))
    items = [item for item in draw(st.permutations(items)) if draw(st.sampled_from([True] * 7 + [False]))]
    parts = []
    for item in items:
        if item == 'uid':
            parts.append(b'UID ' + draw(pick((4, st.just(b'@UID@')),
                                             (1, st.sampled_from([b'0', b'x', b'NIL', b'(1)', b'\xc2\xb2'])))))
        elif item == 'header':
            parts.append(draw(pick((4, st.just(b'BODY[HEADER]')),
                                   (1, st.sampled_from([b'body[header]', b'BODY[HEADER]<0>', b'BODY.PEEK[HEADER]',
                                                        b'RFC822.HEADER']))))
                         + b' ' + draw(imap_header_value))
        elif item == 'flags':
            parts.append(b'FLAGS (\\Seen \\Recent)')
        elif item == 'size':
            parts.append(b'RFC822.SIZE 120')
        else:
            parts.append(draw(imap_value))
    line = b'* ' + draw(st.sampled_from([b'1', b'1', b'0', b'x'])) + b' FETCH (' + b' '.join(parts) + b')'
    return line + CRLF + draw(st.sampled_from([b'@TAG@ OK done\r\n', b'@TAG@ OK done\r\n', b'']))


imap_explicit = pick((4, imap_plausible), (2, imap_status()), (2, imap_data()), (2, imap_fetch_reply()),
                     (1, imap_literal_lie), (2, imap_nest),
                     (1, imap_long), (1, garbage), (2, imap_secret_reply))

imap_capability = st.one_of(
    st.sampled_from(list(IMAP_CAPABILITIES) + [b'AUTH=LOGIN', b'AUTH=XOAUTH2', b'auth=plain', b'auth=cram-md5',
                                               b'starttls', b'STARTTLS extra', b'', b'IMAP4rev2', b'UTF8=ACCEPT',
                                               b'AUTH=', b'IDLE IDLE', b'(', b'"IDLE"', b'[IDLE]']),
    noisy_text,
)
imap_folder = st.one_of(
    st.sampled_from([(b'\\HasNoChildren \\Junk', b'Junk'), (b'\\HasNoChildren', b'Spam'), (b'\\Trash', b'Papierkorb'),
                     (b'\\Junk', b'Ind&AOk-sirables'), (b'\\Trash', b'Corbeille&-Trash'), (b'\\Junk', b'Junk Mail'),
                     (b'\\junk', b'Junk'), (b'\\Junk \\Junk', b'Spam'), (b'\\Junk', b'INBOX'), (b'', b'Junk'),
                     (b'\\Noselect', b'Archive'), (b'\\Junk', b'a"b\\c'), (b'\\Junk', b'Ind\xc3\xa9sirables'),
                     (b'\\Junk', b''), (b'\\Trash', b'Trash'), (b'\\Archive', b'Archive')]),
    st.tuples(st.sampled_from([b'\\Junk', b'\\Trash', b'', b'\\HasChildren']), noisy_text),
)
imap_folders = pick(
    (4, st.just(list(IMAP_FOLDERS))),
    (2, some_of(list(IMAP_FOLDERS), imap_folder)),
    (1, st.just([(b'\\HasNoChildren', b'INBOX'), (b'\\HasNoChildren', b'Spam'), (b'\\HasNoChildren', b'Trash')])),
    (1, st.lists(imap_folder, max_size=4).map(lambda folders: [(b'', b'INBOX')] + folders)),
)
# Where a mail lands besides the watched INBOX: a junk folder (by attribute or by name), one the
# probe does not watch, one whose name needs encoding.
OTHER_FOLDERS = [b'Junk', b'Spam', b'Trash', b'Ind&AOk-sirables', b'Junk Mail', b'Archive']
imap_foreign = st.one_of(
    st.sampled_from([[b'Subject: hello', b'From: a@fuzz.test'], [b'Subject: [health] mailops.health round trip'] + OURS[2][1:]]),
    st.builds(lambda when: [b'Subject: [health] mailops.health round trip ' + OLD_TOKEN,
                            b'X-Mailops-Roundtrip: ' + OLD_TOKEN, b'Date: ' + when], date),
)


@st.composite
def imap_mailbox(draw):
    """As mailbox() for POP3, with UIDs and folders: the probe's mail (usually one copy, with the
    next UID of its folder, usually INBOX) among others, a mailbox where it never arrives, or
    anything."""
    # A mail that never shows costs a whole max_trip_time: rarer than over POP3.
    kind = draw(st.sampled_from(['ours'] * 16 + ['never', 'anything', 'anything', 'anything']))
    messages = []
    for uid in draw(st.lists(st.integers(1, 40), max_size=4, unique=True)):
        messages.append(ImapMessage(uid, draw(headers if kind == 'anything' else imap_foreign),
                                    folder=draw(pick((4, st.just(b'INBOX')), (1, st.sampled_from(OTHER_FOLDERS)))),
                                    arrives=kind == 'anything' and draw(st.booleans())))
    if kind == 'ours' or (kind == 'anything' and draw(st.booleans())):
        folder = draw(pick((9, st.just(b'INBOX')), (1, st.sampled_from(OTHER_FOLDERS))))
        top = max([m.uid for m in messages if m.folder == folder] + [0])
        offset = draw(pick((15, st.just(0)), (1, st.integers(-3, 10 ** 6))))
        for copy in range(draw(st.sampled_from([1, 1, 1, 2]))):
            messages.append(ImapMessage(max(1, top + 1 + offset + copy), OURS[0], folder=folder, arrives=True))
    return messages


imap_idle_push = pick(
    (6, st.just(b'* @N@ EXISTS\r\n')),
    (2, st.none()),
    (2, st.sampled_from([b'* @N@ RECENT\r\n', b'* 1 FETCH (FLAGS (\\Seen))\r\n', b'* OK still here\r\n',
                         b'* @N@ EXISTS\r\n* @N@ EXISTS\r\n', b'* (unbalanced\r\n', b'+ idling\r\n', b'A999 OK\r\n',
                         b'@TAG@ OK IDLE done\r\n', b'* \xff\xfe\r\n', b'junk\r\n', b'* 1 FETCH (BODY[] {5}\r\n',
                         b'* BYE idle over\r\n', b'* @N@ EXISTS', b'\r\n', b'* 99999999999999999999 EXISTS\r\n'])),
    (1, st.tuples(noisy_text, line_end).map(b''.join)),
    (1, st.builds(Long, prefix=st.sampled_from([b'* OK ', b'* ', b'']), fill=st.sampled_from([b'x', b'\xff', b'(']),
                  size=st.sampled_from([MAX_LINE, 2 * MIB]), end=st.sampled_from([CRLF, b'']))),
)
imap_persona = st.builds(
    ImapPersona,
    host=host,
    greeting=pick((10, st.just('OK')), (1, st.just('PREAUTH')), (1, st.just('BYE'))),
    caps_in_greeting=st.booleans(),
    capabilities=pick((3, some_of(IMAP_CAPABILITIES, imap_capability)), (1, st.lists(imap_capability, max_size=8))),
    tls_capabilities=pick((3, st.none()), (1, some_of(IMAP_CAPABILITIES[2:], imap_capability))),
    auth_ok=seldom_false(),
    challenge=challenge,
    folders=imap_folders,
    messages=imap_mailbox(),
    arrival=pick((6, st.just('now')), (1, st.sampled_from(IMAP_ARRIVALS))),
    uidnext=pick((12, st.none()), (1, st.sampled_from([b'', b'0', b'1', b'x', b'99999999999999999999', b'\xc2\xb2',
                                                      b'-1', b'4294967296', b'\xd9\xa3']))),
    uidvalidity=pick((6, st.just(b'1')), (1, st.sampled_from([b'', b'0', b'x', b'\xff', b'(1)']))),
    search=pick((6, st.just('honest')), (1, st.sampled_from(['all', 'star']))),
    fetch=pick((3, st.just('literal')), (1, st.sampled_from(IMAP_FETCH_FORMS))),
    literal=pick((12, st.just(0)), (1, st.sampled_from([-1, -10, 1, 2, 100, 10 ** 6]))),
    refuse=pick((8, st.just(())), (1, st.lists(st.sampled_from(
        ['CAPABILITY', 'STARTTLS', 'LOGIN', 'AUTHENTICATE', 'LIST', 'STATUS', 'SELECT', 'NOOP', 'UID SEARCH',
         'UID FETCH', 'UID STORE', 'UID EXPUNGE', 'UID MOVE', 'IDLE', 'LOGOUT']), max_size=2))),
    idle_push=imap_idle_push,
    idle_delay=st.sampled_from([0.0, 0.05, 0.05, 0.3]),
    idle_end=pick((6, st.just('ok')), (1, st.sampled_from(IMAP_IDLE_ENDS))),
    quirks=pick((4, st.just(())), (1, st.lists(st.sampled_from(IMAP_QUIRKS), max_size=3))),
    cert=st.sampled_from(CERT_KINDS),
    echo=echo('imap'),
)

# A server that keeps to the RFCs in all it does, in the ways real ones differ: which extensions
# it has, what its folders are called (special-use attributes or well-known names, names that
# need quoting or modified UTF-7, other delimiters), how it orders FETCH items, untagged data it
# adds, lower-case status words, whether the mail lands in INBOX or a junk folder and whether
# SEARCH sees it at once. A round trip against it must succeed.
PLAIN_FOLDER_SETS = [
    list(IMAP_FOLDERS),
    [(b'\\HasNoChildren', b'INBOX'), (b'\\HasNoChildren', b'Spam'), (b'\\HasNoChildren', b'Trash')],
    [(b'\\HasChildren', b'INBOX'), (b'\\HasNoChildren \\Junk', b'INBOX.Junk'), (b'\\HasNoChildren \\Trash', b'INBOX.Trash')],
    [(b'', b'INBOX'), (b'\\Junk', b'Junk E-mail'), (b'\\Trash', b'Deleted Items')],
    [(b'', b'INBOX'), (b'\\Junk', b'Ind&AOk-sirables'), (b'\\Trash', b'Corbeille')],
    [(b'', b'INBOX'), (b'\\Junk', b'Junk'), (b'\\Trash', b'Papierkorb &- Archiv')],
    [(b'', b'INBOX')],
]
PLAIN_CAPABILITIES = [b'AUTH=PLAIN', b'AUTH=CRAM-MD5', b'SASL-IR', b'IDLE', b'UIDPLUS', b'MOVE', b'SPECIAL-USE',
                      b'LITERAL+', b'ID', b'NAMESPACE', b'ENABLE', b'CONDSTORE']


@st.composite
def plain_imap_mailbox(draw, folders):
    """Others' mail and earlier probes' leftovers, and the probe's own mail (one copy, maybe
    two) with the next UID in INBOX or in a junk folder of the server's."""
    names = [name for _attrs, name in folders]
    junk = [name for attrs, name in folders if b'\\Junk' in attrs.split()] or [n for n in names if n in (b'Junk', b'Spam')]
    messages = [ImapMessage(uid, draw(imap_foreign), folder=draw(st.sampled_from(names)))
                for uid in draw(st.lists(st.integers(1, 40), max_size=4, unique=True))]
    folder = draw(st.sampled_from([b'INBOX'] * 3 + junk))
    top = max([m.uid for m in messages if m.folder == folder] + [0])
    for copy in range(draw(st.sampled_from([1, 1, 1, 2]))):
        messages.append(ImapMessage(top + 1 + copy, OURS[0], folder=folder, arrives=True))
    return messages


@st.composite
def plain_imap_persona(draw):
    folders = draw(st.sampled_from(PLAIN_FOLDER_SETS))
    capabilities = draw(some_of(PLAIN_CAPABILITIES, st.sampled_from([b'UNSELECT', b'QUOTA', b'CHILDREN'])))
    return ImapPersona(
        greeting='OK', caps_in_greeting=draw(st.booleans()), capabilities=[b'STARTTLS'] + capabilities,
        folders=folders, messages=draw(plain_imap_mailbox(folders)), arrival=draw(st.sampled_from(['now', 'late'])),
        search=draw(st.sampled_from(['honest', 'star'])),
        fetch=draw(st.sampled_from(['literal', 'literal-first', 'extras'])),
        quirks=draw(st.lists(st.sampled_from(['alert', 'exists-always', 'lowercase', 'caps-code']), max_size=2)),
    )


# -- steps and scripts --------------------------------------------------------------------
delay = st.sampled_from([0.0, 0.0, 0.0, 0.0, 0.0, 0.01, 0.05, 0.25])
split = st.sampled_from([0, 0, 0, 1, 3, 8])


def explicit_step(replies):
    return st.builds(Step, reply=replies, delay=delay, split=split,
                     after=st.sampled_from(['read', 'read', 'read', 'read', 'read', 'close', 'reset', 'tls']))


auto_step = st.builds(Step, reply=st.none(), delay=delay, split=split,
                      after=st.sampled_from(['read', 'read', 'close', 'reset']))
# stall costs a whole client timeout: keep it rare.
ending = st.sampled_from(['auto'] * 18 + ['close', 'close', 'close', 'reset', 'reset', 'stall'])


@st.composite
def script(draw, replies, max_steps=30):
    """Mostly AUTO steps with up to three mutations (the dialogue gets deep), or a short
    random mix. Steps are counted from the greeting; the ending applies after the last one."""
    if draw(st.sampled_from(['mutate', 'mutate', 'mutate', 'random'])) == 'mutate':
        steps = [AUTO] * draw(st.integers(0, max_steps))
        mutations = draw(st.lists(st.tuples(st.integers(0, max_steps),
                                            st.one_of(explicit_step(replies), auto_step)), max_size=3))
        for position, step in mutations:
            if position < len(steps):
                steps[position] = step
            else:
                steps.append(step)
    else:
        steps = draw(st.lists(st.one_of(st.just(AUTO), explicit_step(replies), auto_step), max_size=12))
    return Script(steps, draw(ending))


smtp_script = script(smtp_explicit)
pop3_script = script(pop3_explicit)
# Mutations where the dialogue is: imap_check's has some 6 server turns (greeting, CAPABILITY,
# STARTTLS, the login, STATUS, LOGOUT), a round trip's one connection some 20 to the first checks
# (three lines each) and the deletion.
# The commands a step can be aimed at; a round trip's mailbox commands twice as often.
IMAP_COMMANDS = [moment for moment in MOMENTS['imap'] if moment not in ('greeting', 'PUSH')]
IMAP_COMMANDS += [command for command in IMAP_COMMANDS if command.startswith('UID') or command in ('IDLE', 'DONE')]


def aimed_reply(command):
    """An explicit reply for command: for UID FETCH mostly an answer in its shape (whose parts a
    client looks into), else anything."""
    if command == 'UID FETCH':
        return pick((3, imap_fetch_reply()), (1, imap_explicit))
    return imap_explicit


@st.composite
def imap_script(draw, max_steps, commands=IMAP_COMMANDS):
    """script() with, two times in three, one or two explicit steps aimed at commands (the answer
    to UID FETCH, to DONE, ...) wherever in the dialogue they come."""
    steps = draw(script(imap_explicit, max_steps))
    if draw(pick((1, st.just(False)), (2, st.just(True)))):
        aimed = draw(st.lists(st.sampled_from(commands), min_size=1, max_size=2, unique=True))
        steps.at = dict((command, draw(explicit_step(aimed_reply(command)))) for command in aimed)
    return steps


# imap_check sends these (besides IDLE, SELECT and the UID commands of a round trip).
imap_check_script = imap_script(max_steps=8, commands=['CAPABILITY', 'STARTTLS', 'LOGIN', 'AUTHENTICATE', 'AUTH-ANSWER',
                                                       'LIST', 'STATUS', 'LOGOUT'])
imap_roundtrip_script = imap_script(max_steps=24)
