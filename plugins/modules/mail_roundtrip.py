#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: mail_roundtrip
short_description: Prove that a mail sent now arrives in a POP3 or IMAP mailbox, and measure how long it takes
version_added: 0.1.0
description:
  - Logs in to the mailbox first (so wrong credentials never leave a test mail behind), sends a mail over SMTP whose
    subject and C(X-Mailops-Roundtrip) header carry a fresh random token, then checks the mailbox until the mail with
    exactly that token is there, deletes that mail and only that one, and reports the timings.
  - B(POP3) (O(receive_protocol=pop3), the default) - each check is one POP3 session that reads only the headers of
    messages it has not looked at before (UIDL and TOP), newest first, so a full mailbox costs little; DELE, then QUIT
    to commit. Without UIDL (or with UIDLs the server repeats) every message is looked at; without TOP the message is
    read with RETR. Checks come quickly at first (after 10 ms, doubling) and then every O(connection_interval)
    seconds.
  - B(IMAP) (O(receive_protocol=imap)) - one connection stays open through the round trip. The server finds the mail
    (UID SEARCH HEADER on the token), so a full mailbox costs what an empty one does. Checks come after 2 ms,
    doubling, each a NOOP and a search; once they are a second or more apart, the wait between them is spent in IDLE,
    so a server that pushes news of the mail ends the wait at once (RV(seen_by=push)), and one that never pushes is
    still found by the next check. The mail is removed with UID EXPUNGE (UIDPLUS) or moved to the trash folder
    (MOVE); a server with neither gets the mail flagged C(\Deleted) but not expunged, with a warning, because a plain
    EXPUNGE would also remove other clients' deleted mail.
  - With IMAP the junk folders are searched too (O(junk_folders)); a mail filed there is found, deleted there and
    reported in RV(folder), and O(junk) decides whether that is fine, a warning or a failure.
  - When the mail has not arrived after O(max_trip_time) seconds the module fails at stage C(timeout); the mail then
    stays in the mailbox, and O(cleanup_stale) removes it on a later run.
  - A POP3 mailbox locked by another session (C(-ERR [IN-USE])) is tried again on the same schedule until
    O(max_trip_time); several probes can share one mailbox.
  - A probe deletes only mail it sent itself. If the test mail arrives more than once, every copy is deleted and a
    warning says so.
author:
  - mailops.health developers (@mailops-health)
extends_documentation_fragment:
  - mailops.health.common
  - mailops.health.common.attributes
attributes:
  check_mode:
    description:
      - In check mode the module connects and logs in on both sides, sends nothing and deletes nothing.
      - It reports C(changed=false) after a round trip, because the mailbox is left as it was found; only
        O(cleanup_stale) deleting leftovers of earlier runs reports C(changed=true).
options:
  smtp_host:
    description: SMTP server that accepts the mail.
    type: str
    required: true
  smtp_port:
    description: SMTP port; by default 465 for implicit TLS, else 25.
    type: int
  smtp_tls_mode:
    description: Transport security on the SMTP side, as O(mailops.health.smtp_check#module:tls_mode).
    type: str
    choices: [none, starttls, starttls_if_available, tls, tls_if_available]
    default: starttls_if_available
  smtp_tls_server_name:
    description: The name sent as SNI and checked against the SMTP server's certificate, as
      O(mailops.health.smtp_check#module:tls_server_name); default O(smtp_host).
    type: str
  smtp_auth:
    description: V(password) authenticates with O(smtp_username) and O(smtp_password) before sending, V(oauth2) with
      O(smtp_username) and O(smtp_oauth2_token).
    type: str
    choices: [none, password, oauth2]
    default: none
  auth_mechanism:
    description: SMTP AUTH mechanism or mechanisms, as O(mailops.health.smtp_check#module:auth_mechanism).
    type: list
    elements: str
    choices: [auto, plain, login, cram-md5, xoauth2, oauthbearer]
    default: [auto]
  smtp_username:
    description: SMTP AUTH user.
    type: str
  smtp_password:
    description: SMTP AUTH password. Never returned or logged.
    type: str
  smtp_oauth2_token:
    description: OAuth 2.0 access token for SMTP AUTH, as O(mailops.health.smtp_check#module:oauth2_token);
      it logs in instead of the password with O(smtp_auth=oauth2). Never returned or logged.
    type: str
  helo:
    description: Name sent with EHLO; defaults to this host's fully qualified name.
    type: str
  mail_from:
    description: Envelope sender and From header of the test mail.
    type: str
    required: true
  mail_to:
    description: The one address whose mailbox O(pop3_username) (or O(imap_username)) reads.
    type: str
    required: true
  receive_protocol:
    description: How the mailbox is read. The chosen side's host, user name and password are required.
    type: str
    choices: [pop3, imap]
    default: pop3
  pop3_host:
    description: POP3 server of the receiving mailbox. Required with O(receive_protocol=pop3).
    type: str
  pop3_port:
    description: POP3 port; by default 995 for implicit TLS, else 110.
    type: int
  pop3_tls_mode:
    description: Transport security on the POP3 side, as O(mailops.health.pop3_check#module:tls_mode).
    type: str
    choices: [none, starttls, starttls_if_available, tls, tls_if_available]
    default: starttls_if_available
  pop3_tls_server_name:
    description: The name sent as SNI and checked against the POP3 server's certificate, as
      O(mailops.health.smtp_check#module:tls_server_name); default O(pop3_host).
    type: str
  pop3_auth:
    description: V(password) logs in with USER/PASS, V(apop) with APOP, V(xoauth2) and V(oauthbearer) with AUTH and
      O(pop3_oauth2_token).
    type: str
    choices: [password, apop, xoauth2, oauthbearer]
    default: password
  pop3_username:
    description: POP3 user of the receiving mailbox. Required with O(receive_protocol=pop3).
    type: str
  pop3_password:
    description: POP3 password. Never returned or logged. Required with O(receive_protocol=pop3).
    type: str
  pop3_oauth2_token:
    description: OAuth 2.0 access token for the POP3 mailbox, as O(mailops.health.smtp_check#module:oauth2_token);
      it logs in instead of the password with O(pop3_auth=xoauth2) or O(pop3_auth=oauthbearer). Never returned or logged.
    type: str
  imap_host:
    description: IMAP server of the receiving mailbox. Required with O(receive_protocol=imap).
    type: str
  imap_port:
    description: IMAP port; by default 993 for implicit TLS, else 143.
    type: int
  imap_tls_mode:
    description: Transport security on the IMAP side, as O(mailops.health.imap_check#module:tls_mode).
    type: str
    choices: [none, starttls, starttls_if_available, tls, tls_if_available]
    default: starttls_if_available
  imap_tls_server_name:
    description: The name sent as SNI and checked against the IMAP server's certificate, as
      O(mailops.health.smtp_check#module:tls_server_name); default O(imap_host).
    type: str
  imap_auth_mechanism:
    description: IMAP login mechanism, as O(mailops.health.imap_check#module:auth_mechanism); with
      O(imap_oauth2_token), V(auto), V(xoauth2) or V(oauthbearer).
    type: str
    choices: [auto, login, plain, cram-md5, xoauth2, oauthbearer]
    default: auto
  imap_username:
    description: IMAP user of the receiving mailbox. Required with O(receive_protocol=imap).
    type: str
  imap_password:
    description: IMAP password. Never returned or logged. Required with O(receive_protocol=imap).
    type: str
  imap_oauth2_token:
    description: OAuth 2.0 access token for the IMAP mailbox, as O(mailops.health.smtp_check#module:oauth2_token);
      it logs in instead of the password (the IMAP login is then OAuth). Never returned or logged.
    type: str
  imap_folder:
    description: The IMAP folder the mail is expected in.
    type: str
    default: INBOX
  junk_folders:
    description:
      - IMAP folders searched besides O(imap_folder) for a mail filed as spam.
      - By default the server's C(\Junk) special-use folder, else the folders named C(Junk) or C(Spam) that exist.
        An empty list searches none.
    type: list
    elements: str
  junk:
    description:
      - What a test mail found in a junk folder means. V(ok) - nothing; V(warn) - the round trip passes with
        RV(status=warning) and a warning; V(fail) - it fails at stage C(junk). The mail is deleted in every case.
    type: str
    choices: [ok, warn, fail]
    default: warn
  subject_prefix:
    description: Text put before the generated subject (C(mailops.health round trip <token>)).
    type: str
    default: ''
  connection_interval:
    description: Longest wait in seconds between two mailbox checks.
    type: float
    default: 5
  max_trip_time:
    description: Seconds after the mail was accepted before the module gives up at stage C(timeout), 1 to 3600.
    type: int
    default: 30
  cleanup_stale:
    description:
      - Before sending, delete the test mails earlier runs left behind (a run that timed out or was killed).
      - Only mails with this module's C(X-Mailops-Roundtrip) header holding a well-formed token that is repeated in
        the subject, and dated more than O(max_trip_time) seconds ago, are deleted; a probe running at the same time
        keeps its mail.
      - This reads the headers of every message in the mailbox once.
    type: bool
    default: false
  require_authentication:
    description:
      - Verdicts of the receiving side that must be C(pass), read from the C(Authentication-Results) header (RFC 8601)
        of the delivered test mail (RV(authentication)). One that is not (C(fail), C(softfail), C(none), or no
        result at all) fails the round trip at stage C(authentication), after the mail was deleted.
      - The verdicts are those of the topmost C(Authentication-Results) header, or of the topmost one whose
        authserv-id is in O(authserv_ids). SPF falls back to C(Received-SPF).
    type: list
    elements: str
    choices: [spf, dkim, dmarc]
    default: []
  authserv_ids:
    description:
      - The authserv-ids (the first word of C(Authentication-Results)) of the receiving side's own verifiers. Only
        their headers count, so a header the sender wrote under that name lower down, or one from a hop on the way,
        cannot pass for the receiver's verdict (RFC 8601 section 5).
    type: list
    elements: str
  watch_bounces:
    description:
      - Watch the receiving mailbox (and the sender's, O(sender_host)) for a bounce of the test mail while waiting, and
        fail at once at stage C(bounced) when one comes (see O(sender_protocol)). Messages that look like bounces
        (a C(multipart/report), a MAILER-DAEMON or postmaster sender, an empty Return-Path) are read up to their first
        256 KiB (POP3 C(TOP n 400)) to tell whether they are about the test mail; over IMAP the search also finds
        new messages with a C(multipart/report) Content-Type or from a mailer daemon or postmaster.
      - V(false) waits for the test mail alone, as far as O(max_trip_time).
    type: bool
    default: true
  sender_protocol:
    description:
      - How the mailbox of O(mail_from) is read when O(sender_host) is given, to watch it for bounces.
      - The receiving mailbox is always watched for bounces about the test mail; give the sender's mailbox when it is
        another one. A delivery status notification (RFC 3464, or a plain-text bounce) whose returned headers carry the
        test mail's token or Message-ID fails the round trip at once at stage C(bounced) with its status and
        diagnostic, instead of waiting for O(max_trip_time), and is deleted like the test mail. A delay notice
        (C(4.x.x)) is deleted and warned about, and the wait goes on. Other bounces are left alone.
    type: str
    choices: [pop3, imap]
    default: imap
  sender_host:
    description: Server of the sender's mailbox (O(sender_protocol)); without it only the receiving mailbox is watched.
    type: str
  sender_port:
    description: Port of the sender's mailbox; by default as for O(pop3_port) or O(imap_port).
    type: int
  sender_tls_mode:
    description: Transport security to the sender's mailbox, as O(mailops.health.imap_check#module:tls_mode).
    type: str
    choices: [none, starttls, starttls_if_available, tls, tls_if_available]
    default: starttls_if_available
  sender_tls_server_name:
    description: The name checked against the certificate of the sender's mailbox server; default O(sender_host).
    type: str
  sender_username:
    description: User of the sender's mailbox. Required with O(sender_host).
    type: str
  sender_password:
    description: Password of the sender's mailbox. Never returned or logged. Required with O(sender_host).
    type: str
  sender_oauth2_token:
    description: OAuth 2.0 access token for the sender's mailbox, as O(mailops.health.smtp_check#module:oauth2_token);
      it logs in instead of the password. Never returned or logged.
    type: str
seealso:
  - module: mailops.health.smtp_check
  - module: mailops.health.pop3_check
  - module: mailops.health.imap_check
'''

EXAMPLES = r'''
- name: A mail sent now arrives within 30 s
  mailops.health.mail_roundtrip:
    smtp_host: mx.example.com
    smtp_port: 587
    smtp_tls_mode: starttls
    smtp_auth: password
    smtp_username: monitor@example.com
    smtp_password: "{{ vault_monitor_password }}"
    mail_from: monitor@example.com
    mail_to: roundtrip@example.com
    pop3_host: pop.example.com
    pop3_tls_mode: tls
    pop3_auth: apop
    pop3_username: roundtrip
    pop3_password: "{{ vault_roundtrip_password }}"
    max_trip_time: 30
    warning_ms: 5000
  register: trip

- name: Show the timings
  ansible.builtin.debug:
    msg: "arrived after {{ trip.trip_time_ms }} ms (SMTP {{ trip.smtp.response_time_ms }} ms, POP3 {{ trip.pop3.response_time_ms }} ms)"

- name: The same over IMAP, failing when the mail is filed as spam
  mailops.health.mail_roundtrip:
    smtp_host: mx.example.com
    smtp_port: 587
    smtp_tls_mode: starttls
    smtp_auth: password
    smtp_username: monitor@example.com
    smtp_password: "{{ vault_monitor_password }}"
    mail_from: monitor@example.com
    mail_to: roundtrip@example.com
    receive_protocol: imap
    imap_host: imap.example.com
    imap_tls_mode: tls
    imap_username: roundtrip
    imap_password: "{{ vault_roundtrip_password }}"
    junk: fail
    max_trip_time: 60
  register: trip
'''

RETURN = r'''
status:
  description: V(up), V(warning) (RV(total_ms) above O(warning_ms)) or V(down).
  returned: always
  type: str
  sample: up
token:
  description: The random token in the test mail's subject and C(X-Mailops-Roundtrip) header.
  returned: always
  type: str
  sample: 5f0c1d2e3a4b4c5d8e9f0a1b2c3d4e5f
message_id:
  description: Message-ID of the test mail; V(null) when nothing was sent.
  returned: always
  type: str
  sample: <172.1234.5678@example.com>
sent:
  description: Whether the test mail was sent (V(false) in check mode).
  returned: when the SMTP side ran
  type: bool
  sample: true
deleted:
  description: The test mail was found, deleted and the deletion committed.
  returned: success, not in check mode
  type: bool
  sample: true
stale_deleted:
  description: How many leftovers of earlier runs O(cleanup_stale) deleted.
  returned: always
  type: int
  sample: 0
smtp:
  description: The SMTP session, with the keys M(mailops.health.smtp_check) returns (C(response_time_ms),
    C(tls), C(banner), C(queue_id), ...).
  returned: when the SMTP side ran
  type: dict
  sample: {"response_time_ms": 21.4, "queue_id": "4XyZ1234", "tls": {"established": true, "version": "TLSv1.3"}}
pop3:
  description: The POP3 session that found and deleted the mail (the first login in check mode), with the keys
    M(mailops.health.pop3_check) returns, among them C(response_time_ms), and C(copies), how many copies of the test
    mail it found and deleted.
  returned: with O(receive_protocol=pop3)
  type: dict
  sample: {"response_time_ms": 9.8, "apop_supported": true, "tls": {"established": true, "version": "TLSv1.3"}}
imap:
  description: The IMAP connection and the check that found and deleted the mail (the login in check mode), with the
    keys M(mailops.health.imap_check) returns; C(response_time_ms) is the time of that check (of the login in check
    mode), C(copies) how many copies it deleted and C(deleted_by) how (V(uid_expunge), V(move) or V(flagged)).
  returned: with O(receive_protocol=imap)
  type: dict
  sample: {"response_time_ms": 1.2, "copies": 1, "deleted_by": "uid_expunge", "capabilities": ["IMAP4rev1", "IDLE"]}
folder:
  description: The IMAP folder the test mail was found in; V(null) with POP3.
  returned: success, not in check mode
  type: str
  sample: INBOX
seen_by:
  description: V(push) when an IMAP server's IDLE notice of new mail led to the check that found the mail, else V(check).
  returned: success, not in check mode
  type: str
  sample: check
total_ms:
  description: SMTP response time plus the receiving side's response time, in milliseconds; the figure O(warning_ms) and
    O(critical_ms) apply to.
  returned: success
  type: float
  sample: 31.2
trip_time_ms:
  description: Milliseconds from the SMTP server accepting the mail to the probe seeing it in the mailbox.
  returned: always
  type: float
  sample: 112.5
hops:
  description:
    - The path of the delivered test mail, one entry per C(Received) header in the order the mail travelled (the
      bottom-most header is the first hop), read from its headers only.
    - C(delay_s) is the time from the hop before, from the headers' dates (whole seconds on most servers); a negative
      one is clock skew between the servers and is flagged with C(clock_skew) and a warning, not hidden.
  returned: success, not in check mode
  type: list
  elements: dict
  contains:
    from:
      description: The name the sending side gave (its HELO, or the name the receiving side looked up).
      type: str
    from_ip:
      description: The sending side's address, when stated.
      type: str
    by:
      description: The server that received the mail at this hop.
      type: str
    with:
      description: The protocol (C(ESMTP), C(ESMTPSA), C(LMTP), ...).
      type: str
    tls:
      description: V(true) when the header states TLS (C(ESMTPS), C(ESMTPSA), a TLS comment); V(null) when it does not say.
      type: bool
    tls_version:
      description: The TLS version when stated.
      type: str
    id:
      description: The receiving server's queue id.
      type: str
    for:
      description: The recipient the header names.
      type: str
    timestamp:
      description: When this hop received the mail (ISO 8601, UTC).
      type: str
    delay_s:
      description: Seconds since the hop before; V(null) for the first hop or when a date is missing.
      type: float
    clock_skew:
      description: Whether this hop is dated before the one before it.
      type: bool
  sample:
    - {"from": "probe.example.com", "from_ip": "192.0.2.7", "by": "mail.example.com", "with": "ESMTPSA", "tls": true,
       "tls_version": "TLSv1.3", "id": "4QxY1b2", "for": "monitor@example.org", "timestamp": "2026-12-06T09:00:01Z",
       "delay_s": null, "clock_skew": false}
path:
  description: A summary of RV(hops) - how many, C(total_s) from the first to the last dated hop, C(max_delay_s), the
    longest one hop took, and C(clock_skew).
  returned: success, not in check mode
  type: dict
  sample: {"hops": 4, "total_s": 1, "max_delay_s": 1, "clock_skew": false}
authentication:
  description:
    - The verdicts the receiving side stamped on the test mail (C(Authentication-Results), RFC 8601) - C(spf),
      C(dkim), C(dmarc) (V(pass), V(fail), V(none), V(softfail), ... or V(null) when not stamped) and the
      C(authserv_id) they came from. See O(require_authentication) and O(authserv_ids).
  returned: success, not in check mode; also on failure at stage C(authentication)
  type: dict
  sample: {"spf": "pass", "dkim": "pass", "dmarc": "pass", "authserv_id": "mx.example.org"}
bounce:
  description: The bounce that failed the round trip at stage C(bounced) - C(action), C(status) (such as V(5.1.1)),
    C(diagnostic), C(recipient), C(reporting_mta), C(remote_mta), C(original_message_id), C(mailbox) where it was
    found, and C(arrived_ms), how long after sending it was seen.
  returned: on failure at stage C(bounced)
  type: dict
  sample: {"action": "failed", "status": "5.1.1", "diagnostic": "smtp; 550 5.1.1 <nobody@example.org>: User unknown",
           "reporting_mta": "mx.example.org", "mailbox": "imap mail.example.com:993", "arrived_ms": 812.4}
sender:
  description: The connection to the sender's mailbox (O(sender_host)) and its last check, with the keys of RV(imap) or
    RV(pop3).
  returned: when O(sender_host) is given
  type: dict
  sample: {"response_time_ms": 1.1, "bounces": 0}
attempts:
  description: How many times the mailbox was checked after sending.
  returned: always
  type: int
  sample: 2
tries:
  description: How many tries the check took (1 unless it was tried again, see O(retries)).
  returned: always
  type: int
  sample: 1
failed_tries:
  description: Each failed try before the last, with its C(stage) and C(msg).
  returned: always
  type: list
  elements: dict
  sample: [{"stage": "banner", "msg": "smtp mail.example.com:587: timed out after 10 s waiting for the server"}]
transcript:
  description: Both dialogues (C(C:) client, C(S:) server, C(--) events) with secrets masked.
  returned: when O(transcript=true)
  type: list
  elements: str
  sample: ["-- connected to pop3 127.0.0.1:110", "S: +OK ready"]
stage:
  description: Where the round trip failed.
  returned: on failure
  type: str
  sample: timeout
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mailops.health.plugins.module_utils import _args
from ansible_collections.mailops.health.plugins.module_utils._roundtrip import mail_roundtrip
from ansible_collections.mailops.health.plugins.module_utils._runner import run


def main():
    spec, required_if = _args.roundtrip_spec()
    module = AnsibleModule(argument_spec=spec, required_if=required_if, supports_check_mode=True)
    run(module, mail_roundtrip, module.check_mode)


if __name__ == '__main__':
    main()
