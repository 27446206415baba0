"""Beyond "it arrived": the round trip's hops (Received chain), the verdicts the receiving side
stamped (Authentication-Results, require_authentication), and the bounce fast-fail (a DSN about
the probe, in the receiving mailbox or in the sender's, fails at once at stage bounced and is
deleted). Against the embedded lab's real servers, whose delivery stamps headers or turns the
mail into a bounce as a real MTA on the path would (the Docker lab's test_docker_lab_paths and
the matrix prove the same against Postfix, OpenDKIM and OpenDMARC)."""

import time
from email.utils import formatdate

import pytest

from ansible_collections.mailops.health.plugins.module_utils._probe import ProbeError
from ansible_collections.mailops.health.plugins.module_utils._roundtrip import mail_roundtrip
from lab.embedded import EmbeddedLab

from .helpers import roundtrip_params

AUTHSERV = 'mx.lab.test'


def received(by, source, protocol, when, tls=''):
    return 'from %s ([127.0.0.1]) by %s (Postfix) with %s id 4Q%d%s for <bob@lab.test>; %s' % (
        source, by, protocol, int(when) % 1000, tls, formatdate(when, usegmt=True))


def stamped(raw, skew=0, results='spf=pass smtp.mailfrom=lab.test; dkim=pass header.d=lab.test; dmarc=pass',
            forged=None):
    """raw as it would arrive after three hops, with the receiver's Authentication-Results on top
    (and, when forged, one the sender wrote below)."""
    now = time.time()
    head = []
    if results is not None:
        head.append('Authentication-Results: %s; %s' % (AUTHSERV, results))
    head += ['Received: ' + received('mx.lab.test', 'relay.outside.test', 'ESMTPS', now + skew,
                                     ' (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))'),
             'Received: ' + received('relay.outside.test', 'mail.lab.test', 'ESMTP', now - 1),
             'Received: ' + received('mail.lab.test', 'probe.test', 'ESMTPSA', now - 2)]
    if forged:
        head.append('Authentication-Results: %s; %s' % (AUTHSERV, forged))
    return ('\r\n'.join(head) + '\r\n').encode('ascii') + raw


def dsn_for(raw, sender, status='5.1.1', diagnostic='smtp; 550 5.1.1 <alice@bounce.test>: user unknown',
            action='failed'):
    """A Postfix-style bounce (RFC 3464) of raw, back to sender."""
    original = raw.split(b'\r\n\r\n', 1)[0].decode('utf-8', 'replace')
    text = '\r\n'.join([
        'Return-Path: <>',
        'From: MAILER-DAEMON@mx.lab.test (Mail Delivery System)',
        'To: %s' % sender,
        'Subject: Undelivered Mail Returned to Sender',
        'Date: %s' % formatdate(usegmt=True),
        'MIME-Version: 1.0',
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B1"',
        '',
        '--B1',
        'Content-Type: text/plain',
        '',
        'This is the mail system at host mx.lab.test. Your message could not be delivered.',
        '',
        '--B1',
        'Content-Type: message/delivery-status',
        '',
        'Reporting-MTA: dns; mx.lab.test',
        '',
        'Final-Recipient: rfc822; alice@bounce.test',
        'Action: %s' % action,
        'Status: %s' % status,
        'Diagnostic-Code: %s' % diagnostic,
        '',
        '--B1',
        'Content-Type: text/rfc822-headers',
        '',
        original,
        '',
        '--B1--',
        ''])
    return text.encode('utf-8')


@pytest.fixture()
def path_lab():
    """An embedded lab of its own whose delivery a test rewrites: deliver(rcpt, raw) -> [(rcpt, raw)]."""
    with EmbeddedLab(host='127.0.0.1') as lab:
        real = lab.store.deliver
        lab.rewrite = None

        def deliver(rcpt, raw):
            if lab.rewrite is None:
                return real(rcpt, raw)
            uid = None
            for target, data in lab.rewrite(rcpt, raw):
                uid = real(target, data)
            return uid
        lab.store.deliver = deliver
        yield lab


def test_hops_and_verdicts_of_the_probe(path_lab):
    path_lab.rewrite = lambda rcpt, raw: [(rcpt, stamped(raw))]
    result = mail_roundtrip(roundtrip_params(path_lab, require_authentication=['spf', 'dkim', 'dmarc']))
    assert [hop['by'] for hop in result['hops']] == ['mail.lab.test', 'relay.outside.test', 'mx.lab.test']
    assert [hop['with'] for hop in result['hops']] == ['ESMTPSA', 'ESMTP', 'ESMTPS']
    assert result['hops'][2]['tls_version'] == 'TLSv1.3' and result['hops'][2]['tls'] is True
    assert [hop['delay_s'] for hop in result['hops']] == [None, 1, 1]
    assert result['path'] == {'hops': 3, 'total_s': 2, 'max_delay_s': 1, 'clock_skew': False}
    assert result['authentication'] == {'spf': 'pass', 'dkim': 'pass', 'dmarc': 'pass', 'authserv_id': AUTHSERV}
    assert result['status'] == 'up' and 'epoch' not in result['hops'][0]


def test_a_required_verdict_that_did_not_pass_fails_at_stage_authentication(path_lab):
    path_lab.rewrite = lambda rcpt, raw: [(rcpt, stamped(
        raw, results='spf=pass smtp.mailfrom=lab.test; dkim=fail (bad signature) header.d=lab.test; dmarc=fail'))]
    assert mail_roundtrip(roundtrip_params(path_lab, require_authentication=['spf']))['authentication']['dkim'] == 'fail'
    with pytest.raises(ProbeError) as info:
        mail_roundtrip(roundtrip_params(path_lab, require_authentication=['dkim', 'spf', 'dmarc']))
    error = info.value
    assert error.stage == 'authentication'
    assert 'dkim=fail, dmarc=fail (by mx.lab.test)' in error.message
    assert error.result['deleted'] and error.result['authentication']['spf'] == 'pass'
    assert path_lab.store.messages('bob') == []


def test_no_authentication_results_at_all(path_lab):
    path_lab.rewrite = lambda rcpt, raw: [(rcpt, stamped(raw, results=None))]
    with pytest.raises(ProbeError) as info:
        mail_roundtrip(roundtrip_params(path_lab, require_authentication=['dkim']))
    assert info.value.stage == 'authentication' and 'dkim=none (no Authentication-Results)' in info.value.message


def test_a_forged_lower_verdict_does_not_count_with_authserv_ids(path_lab):
    # The sender wrote "dkim=pass" under the name of the receiver; the receiver's own (top) says fail.
    path_lab.rewrite = lambda rcpt, raw: [(rcpt, stamped(raw, results='dkim=fail header.d=lab.test',
                                                         forged='dkim=pass header.d=lab.test'))]
    result = mail_roundtrip(roundtrip_params(path_lab, authserv_ids=[AUTHSERV]))
    assert result['authentication']['dkim'] == 'fail'


def test_clock_skew_is_flagged_not_hidden(path_lab):
    path_lab.rewrite = lambda rcpt, raw: [(rcpt, stamped(raw, skew=-30))]
    result = mail_roundtrip(roundtrip_params(path_lab))
    assert result['path']['clock_skew'] and result['hops'][2]['clock_skew']
    assert result['hops'][2]['delay_s'] < 0
    assert any('clock skew' in warning for warning in result['warnings'])


@pytest.mark.parametrize('receive', ['pop3', 'imap'])
def test_a_bounce_in_the_receiving_mailbox_fails_at_once(path_lab, receive):
    # bob sends to alice@...; the path refuses it after accepting it; the DSN goes back to bob,
    # whose mailbox the round trip reads.
    path_lab.rewrite = lambda rcpt, raw: [('bob@lab.test', dsn_for(raw, 'bob@lab.test'))]
    params = roundtrip_params(path_lab, receive=receive, mail_from='bob@lab.test', mail_to='alice@lab.test',
                              max_trip_time=30, connection_interval=5)
    start = time.monotonic()
    with pytest.raises(ProbeError) as info:
        mail_roundtrip(params)
    took = time.monotonic() - start
    error = info.value
    assert error.stage == 'bounced', error.message
    assert '5.1.1' in error.message and 'user unknown' in error.message and 'mx.lab.test' in error.message
    assert error.result['bounce']['status'] == '5.1.1' and error.result['bounce']['action'] == 'failed'
    assert took < 10, 'waited %.1f s of max_trip_time 30' % took
    assert path_lab.store.messages('bob') == []  # the DSN was deleted


def test_a_bounce_in_the_senders_mailbox_fails_at_once(path_lab):
    # alice reads her mailbox; bob's (the sender's) is watched over IMAP for the bounce.
    path_lab.rewrite = lambda rcpt, raw: [('bob@lab.test', dsn_for(raw, 'bob@lab.test'))]
    params = roundtrip_params(path_lab, user='alice', mail_from='bob@lab.test', max_trip_time=30,
                              connection_interval=5, sender_protocol='imap', sender_host=path_lab.host,
                              sender_port=path_lab.ports['imap'], sender_tls_mode='starttls', sender_username='bob',
                              sender_password=path_lab.accounts['bob'])
    with pytest.raises(ProbeError) as info:
        mail_roundtrip(params)
    assert info.value.stage == 'bounced' and info.value.result['bounce']['mailbox'].startswith('imap ')
    assert path_lab.store.messages('bob') == []
    assert path_lab.accounts['bob'] not in repr(info.value.result) + info.value.message


def test_someone_elses_bounce_is_left_alone(path_lab):
    foreign = dsn_for(b'Message-ID: <other@lab.test>\r\nSubject: not ours\r\n\r\nbody\r\n', 'bob@lab.test')
    path_lab.store.deliver('bob@lab.test', foreign)
    path_lab.rewrite = lambda rcpt, raw: [('bob@lab.test', foreign), (rcpt, raw)]
    result = mail_roundtrip(roundtrip_params(path_lab, receive='imap'))
    assert result['status'] == 'up'
    assert len(path_lab.store.messages('bob')) == 2  # both foreign bounces stay


def test_a_delay_notice_is_a_warning_and_the_mail_still_counts(path_lab):
    def rewrite(rcpt, raw):
        return [('bob@lab.test', dsn_for(raw, 'bob@lab.test', status='4.4.1', action='delayed',
                                         diagnostic='smtp; 451 4.4.1 try again later')), (rcpt, raw)]
    path_lab.rewrite = rewrite
    result = mail_roundtrip(roundtrip_params(path_lab, receive='imap'))
    assert result['status'] == 'up' and result['deleted']
    assert path_lab.store.messages('bob') == []


def test_sender_options_are_checked_before_anything_is_sent(path_lab):
    params = roundtrip_params(path_lab, sender_host=path_lab.host, sender_username='bob')
    with pytest.raises(ProbeError) as info:
        mail_roundtrip(params)
    assert info.value.stage == 'input' and 'sender_password' in info.value.message
    same = roundtrip_params(path_lab, sender_protocol='pop3', sender_host=path_lab.host,
                            sender_port=path_lab.ports['pop3'], sender_username='bob',
                            sender_password=path_lab.accounts['bob'])
    with pytest.raises(ProbeError) as info:
        mail_roundtrip(same)
    assert info.value.stage == 'input' and 'watched for bounces anyway' in info.value.message


def test_watch_bounces_false_waits_for_the_mail_alone(path_lab):
    path_lab.rewrite = lambda rcpt, raw: [('bob@lab.test', dsn_for(raw, 'bob@lab.test'))]
    params = roundtrip_params(path_lab, receive='imap', mail_from='bob@lab.test', mail_to='alice@lab.test',
                              max_trip_time=2, watch_bounces=False)
    with pytest.raises(ProbeError) as info:
        mail_roundtrip(params)
    assert info.value.stage == 'timeout'
    assert len(path_lab.store.messages('bob')) == 1  # the bounce was not read, so not deleted
