#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: smtp_check
short_description: Check that an SMTP server accepts connections, TLS, login and optionally a mail
version_added: 0.1.0
description:
  - Connects to an SMTP server, reads its greeting, says EHLO, negotiates transport security as O(tls_mode) says,
    optionally authenticates and optionally sends a test mail, then quits.
  - Returns the response time, the server's ESMTP features and AUTH mechanisms, the TLS facts (version, cipher,
    certificate subject, issuer, names, expiry) and, when a mail was sent, the server's reply to DATA with its queue id.
  - Fails with a message naming host, port and what the server said, and a machine-readable C(stage).
author:
  - mailops.health developers (@mailops-health)
extends_documentation_fragment:
  - mailops.health.common
  - mailops.health.common.attributes
  - mailops.health.common.endpoint
attributes:
  check_mode:
    description: Can run in check mode. It then checks the connection, TLS and login but sends no test mail.
options:
  tls_mode:
    default: tls
  smtp_auth:
    description:
      - V(none) checks the dialogue without logging in; V(password) authenticates with O(username) and O(password);
        V(oauth2) with O(username) and O(oauth2_token) (AUTH OAUTHBEARER or XOAUTH2).
    type: str
    choices: [none, password, oauth2]
    default: none
  auth_mechanism:
    description:
      - SMTP AUTH mechanism, or a list of mechanisms tried in turn.
      - V(auto) makes one attempt, with the first the server offers of CRAM-MD5, PLAIN and LOGIN, skipping PLAIN and
        LOGIN on a connection without TLS unless O(allow_cleartext_auth) is set. One attempt per check, so that a
        wrong password does not count several failures against the account (lockout policies). When it is refused,
        the message names the mechanisms the server also offers.
      - A list, such as V([cram-md5, plain]), tries each mechanism the server offers in that order until one is
        accepted; mechanisms the server does not offer are skipped. RV(auth_tried) lists what was tried.
      - With O(smtp_auth=oauth2), V(auto) (OAUTHBEARER when offered, else XOAUTH2), V(xoauth2) or V(oauthbearer).
    type: list
    elements: str
    choices: [auto, plain, login, cram-md5, xoauth2, oauthbearer]
    default: [auto]
  helo:
    description:
      - Name sent with EHLO (or HELO). ASCII host name or address literal; defaults to this host's fully qualified name.
    type: str
  send_mail:
    description:
      - Send a test mail from O(mail_from) to O(mail_to) after the checks.
    type: bool
    default: false
  mail_from:
    description:
      - Envelope sender and From header of the test mail. Required with O(send_mail).
    type: str
  mail_to:
    description:
      - Recipients of the test mail. A comma-separated string is accepted too. Required with O(send_mail).
    type: list
    elements: str
  expect:
    description:
      - V(accept) checks that the server takes what the check sends; V(reject) checks that it refuses it, as a
        healthy server refuses relaying for strangers, AUTH without TLS and senders the login does not own.
      - With O(expect_stage), the check stops at that stage and never sends DATA, so nothing is delivered; an outcome
        other than O(expect) fails at stage C(expectation). A refusal must be permanent (5xx); a temporary one (4xx)
        fails too.
      - O(expect=reject) without O(expect_stage) means O(expect_stage=rcpt).
    type: str
    choices: [accept, reject]
    default: accept
  expect_stage:
    description:
      - Where the outcome is judged.
      - V(rcpt) sends MAIL FROM O(mail_from) and RCPT TO each of O(mail_to) (after the login if O(smtp_auth) says so).
        The open-relay test is O(expect=reject) with an outside domain in O(mail_to) and no login. A refusal at MAIL
        FROM is then not the refusal looked for and fails at stage C(mail_from).
      - V(mail_from) sends MAIL FROM only. Many servers (Postfix by default) refuse a sender the login does not own
        only at RCPT; use V(rcpt) for them.
      - V(auth) asks for AUTH without sending any credentials (AUTH without an initial response, cancelled with
        C(*) at the server's challenge). A server that does not offer AUTH, or refuses it, refuses; one that sends a
        challenge would take the password. O(smtp_auth) is not used. The AUTH-without-TLS test is O(expect=reject),
        O(expect_stage=auth) and O(tls_mode=none).
    type: str
    choices: [auth, mail_from, rcpt]
  subject:
    description:
      - Subject of the test mail.
    type: str
    default: mailops.health test mail
  body:
    description:
      - Body of the test mail.
    type: str
    default: Test mail sent by mailops.health.smtp_check.
seealso:
  - module: mailops.health.pop3_check
  - module: mailops.health.mail_roundtrip
'''

EXAMPLES = r'''
- name: Check submission with STARTTLS and a login
  mailops.health.smtp_check:
    host: mail.example.com
    port: 587
    tls_mode: starttls
    smtp_auth: password
    username: monitor@example.com
    password: "{{ vault_monitor_password }}"
    warning_ms: 500
    critical_ms: 2000
  register: smtp

- name: Fail when the certificate expires within 14 days
  ansible.builtin.assert:
    that: smtp.tls.days_left > 14
    fail_msg: "certificate of {{ smtp.host }} expires {{ smtp.tls.not_after }}"

- name: Send a test mail over implicit TLS, trusting a private CA
  mailops.health.smtp_check:
    host: 127.0.0.1
    tls_mode: tls
    ca_path: /etc/ssl/private-ca.pem
    send_mail: true
    mail_from: monitor@example.com
    mail_to: postmaster@example.com
  register: sent

- name: The MX must not relay for strangers (open-relay test; nothing is delivered)
  mailops.health.smtp_check:
    host: mx1.example.com
    tls_mode: starttls
    expect: reject
    expect_stage: rcpt
    mail_from: probe@example.net
    mail_to: relay-test@example.org

- name: Submission must refuse AUTH before STARTTLS
  mailops.health.smtp_check:
    host: mail.example.com
    port: 587
    tls_mode: none
    expect: reject
    expect_stage: auth

- name: Check one node of a cluster by address, its certificate by the service name, over IPv6
  mailops.health.smtp_check:
    host: 2001:db8::25
    tls_mode: tls
    tls_server_name: smtp.example.com
    address_family: ipv6
    tls_min_version: TLSv1.2
    cert_warning_days: 30
    cert_critical_days: 7
'''

RETURN = r'''
status:
  description: V(up), V(warning) (above O(warning_ms)) or V(down).
  returned: always
  type: str
  sample: up
response_time_ms:
  description: Milliseconds from connect to the server's reply to QUIT.
  returned: always
  type: float
  sample: 41.7
timings:
  description: Milliseconds from connect at which each step ended (connect, banner, tls, auth, data); C(banner_ms) is the time
    from connect to the greeting.
  returned: always
  type: dict
  sample: {"connect_ms": 0.4, "banner_ms": 1.9, "tls_ms": 14.2, "auth_ms": 16.0}
host:
  description: The server checked.
  returned: always
  type: str
  sample: mail.example.com
port:
  description: The port used (after the default for the mode was applied).
  returned: always
  type: int
  sample: 465
banner:
  description: The server's greeting, without the reply code.
  returned: when the server greeted
  type: str
  sample: mail.example.com ESMTP Postfix
features:
  description: ESMTP extensions from the last EHLO reply (after STARTTLS when TLS was negotiated).
  returned: when EHLO succeeded
  type: list
  elements: str
  sample: ["PIPELINING", "SIZE 10240000", "AUTH PLAIN LOGIN", "8BITMIME"]
auth_mechanisms:
  description: AUTH mechanisms the server offers, upper case.
  returned: when EHLO succeeded
  type: list
  elements: str
  sample: ["PLAIN", "LOGIN"]
auth_mechanism_used:
  description: The mechanism used to log in, or on failure the last one tried.
  returned: when O(smtp_auth=password) got as far as AUTH
  type: str
  sample: plain
auth_tried:
  description: The mechanisms tried, in order (more than one only when O(auth_mechanism) lists several).
  returned: when O(smtp_auth=password) got as far as AUTH
  type: list
  elements: str
  sample: [cram-md5, plain]
expectation:
  description: What the server did at O(expect_stage), when one is set (also on failure at stage C(expectation)).
  returned: when O(expect_stage) is set or O(expect=reject)
  type: dict
  contains:
    expect:
      description: O(expect).
      type: str
      sample: reject
    stage:
      description: Where the outcome was judged.
      type: str
      sample: rcpt
    accepted:
      description: Whether the server took the command (or, for V(auth), would have taken credentials).
      type: bool
      sample: false
    code:
      description: The server's reply code; null when it did not offer AUTH at all.
      type: int
      sample: 554
    reply:
      description: The server's reply.
      type: str
      sample: "554 5.7.1 <probe@outside.example>: Relay access denied"
    met:
      description: Whether the outcome is the expected one.
      type: bool
      sample: true
tls:
  description: Transport security facts. Certificate fields are V(null) when no TLS was established.
  returned: always
  type: dict
  contains:
    established:
      description: Whether the dialogue ran over TLS.
      type: bool
      returned: always
      sample: true
    fallback:
      description: Whether a C(*_if_available) O(tls_mode) went on without TLS because the server offered none.
      type: bool
      returned: always
      sample: false
    version:
      description: TLS protocol version.
      type: str
      returned: always
      sample: TLSv1.3
    cipher:
      description: Negotiated cipher suite.
      type: str
      returned: always
      sample: TLS_AES_256_GCM_SHA384
    verified:
      description: Whether the certificate was verified (O(validate_certs)).
      type: bool
      returned: always
      sample: true
    subject:
      description: Certificate subject.
      type: str
      returned: always
      sample: CN=mail.example.com
    issuer:
      description: Certificate issuer.
      type: str
      returned: always
      sample: CN=Example CA,O=Example
    sans:
      description: Subject alternative names, as C(type:value).
      type: list
      elements: str
      returned: always
      sample: ["DNS:mail.example.com", "IP Address:127.0.0.1"]
    not_after:
      description: Expiry of the certificate, ISO 8601 UTC.
      type: str
      returned: always
      sample: "2027-03-01T12:00:00Z"
    days_left:
      description: Whole days until the certificate expires.
      type: int
      returned: always
      sample: 98
data_reply:
  description: The server's reply to the end of DATA.
  returned: when a mail was sent
  type: str
  sample: 250 2.0.0 Ok queued as 4XyZ1234
sent:
  description: Whether a test mail was sent (V(false) in check mode).
  returned: when O(send_mail=true)
  type: bool
  sample: true
queue_id:
  description: The queue id from RV(data_reply), when the server names one.
  returned: when a mail was sent
  type: str
  sample: 4XyZ1234
message_id:
  description: Message-ID header of the sent mail.
  returned: when a mail was sent
  type: str
  sample: <172.1234.5678@example.com>
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
  description: The protocol dialogue (C(C:) client, C(S:) server, C(--) events) with secrets masked.
  returned: when O(transcript=true)
  type: list
  elements: str
  sample: ["-- connected to smtp 127.0.0.1:587", "S: 220 mail.example.com ESMTP", "C: EHLO monitor.example.com"]
stage:
  description: Where the check failed.
  returned: on failure
  type: str
  sample: tls
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mailops.health.plugins.module_utils import _args
from ansible_collections.mailops.health.plugins.module_utils._runner import run
from ansible_collections.mailops.health.plugins.module_utils._smtp import smtp_check


def main():
    spec, required_if = _args.smtp_check_spec()
    module = AnsibleModule(argument_spec=spec, required_if=required_if, supports_check_mode=True)
    run(module, smtp_check, module.check_mode)


if __name__ == '__main__':
    main()
