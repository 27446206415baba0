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
    AUTO, CRLF, LINE_CUT, SECRET_FORMS, Echo, Long, Message, Pop3Persona, Repeat, Script, SmtpPersona, Step, Straddle,
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
    own = [form for form in SECRET_FORMS if form.startswith(protocol) or (protocol == 'pop3' and form == 'apop')]
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
                    'QUIT']}


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
