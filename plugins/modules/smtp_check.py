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
      - V(none) checks the dialogue without logging in; V(password) authenticates with O(username) and O(password).
    type: str
    choices: [none, password]
    default: none
  auth_mechanism:
    description:
      - SMTP AUTH mechanism. V(auto) picks the first the server offers of CRAM-MD5, PLAIN and LOGIN, skipping PLAIN and
        LOGIN on a connection without TLS unless O(allow_cleartext_auth) is set.
    type: str
    choices: [auto, plain, login, cram-md5]
    default: auto
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
  description: The mechanism used to log in.
  returned: when O(smtp_auth=password) succeeded
  type: str
  sample: plain
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
