#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: pop3_check
short_description: Check that a POP3 server accepts connections, TLS and a login
version_added: 0.1.0
description:
  - Connects to a POP3 server, reads its greeting, asks for its capabilities (CAPA), negotiates transport security
    as O(tls_mode) says, optionally logs in with USER/PASS or APOP and reads the mailbox size (STAT), then quits.
  - Never reads, changes or deletes a message.
  - Fails with a message naming host, port and what the server said, and a machine-readable C(stage).
author:
  - mailops.health developers (@mailops-health)
extends_documentation_fragment:
  - mailops.health.common
  - mailops.health.common.attributes
  - mailops.health.common.endpoint
options:
  tls_mode:
    default: starttls_if_available
  pop3_auth:
    description:
      - V(none) checks the connection without logging in.
      - V(password) logs in with USER and PASS, which sends the password; without TLS this needs O(allow_cleartext_auth).
      - V(apop) logs in with APOP (RFC 1939), an MD5 digest of the banner's timestamp and the password, which never
        sends the password. Fails at stage C(login) when the banner carries no APOP timestamp.
      - V(xoauth2) and V(oauthbearer) log in with AUTH (RFC 5034) and O(oauth2_token), over TLS only.
    type: str
    choices: [none, password, apop, xoauth2, oauthbearer]
    default: none
seealso:
  - module: mailops.health.smtp_check
  - module: mailops.health.mail_roundtrip
'''

EXAMPLES = r'''
- name: Check that the monitor account can log in with APOP over STLS
  mailops.health.pop3_check:
    host: mail.example.com
    tls_mode: starttls
    pop3_auth: apop
    username: monitor
    password: "{{ vault_monitor_password }}"
  register: pop3

- name: Warn when the monitor mailbox fills up
  ansible.builtin.assert:
    that: pop3.message_count < 100
    fail_msg: "{{ pop3.message_count }} messages are waiting in the monitor mailbox"

- name: Only check that POP3 over implicit TLS answers
  mailops.health.pop3_check:
    host: mail.example.com
    tls_mode: tls
    critical_ms: 1000
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
  sample: 12.3
timings:
  description: Milliseconds from connect at which each step ended (connect, banner, tls, login); C(banner_ms) is the time
    from connect to the greeting.
  returned: always
  type: dict
  sample: {"connect_ms": 0.3, "banner_ms": 1.1, "tls_ms": 9.8, "login_ms": 11.2}
host:
  description: The server checked.
  returned: always
  type: str
  sample: mail.example.com
port:
  description: The port used (after the default for the mode was applied).
  returned: always
  type: int
  sample: 995
banner:
  description: The server's greeting, without C(+OK).
  returned: when the server greeted
  type: str
  sample: Dovecot ready. <1234.1@mail.example.com>
capabilities:
  description: The CAPA list (after STLS when TLS was negotiated); empty when the server has no CAPA.
  returned: when the server greeted
  type: list
  elements: str
  sample: ["TOP", "UIDL", "USER", "SASL PLAIN"]
apop_supported:
  description: Whether the greeting carries an APOP timestamp.
  returned: when the server greeted
  type: bool
  sample: true
tls:
  description: Transport security facts, as M(mailops.health.smtp_check) returns them.
  returned: always
  type: dict
  sample: {"established": true, "fallback": false, "version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "verified": true,
           "subject": "CN=mail.example.com", "issuer": "CN=Example CA", "sans": ["DNS:mail.example.com"],
           "not_after": "2027-03-01T12:00:00Z", "days_left": 98}
message_count:
  description: Messages in the mailbox (STAT).
  returned: after a login
  type: int
  sample: 3
mailbox_size:
  description: Size of the mailbox in octets (STAT).
  returned: after a login
  type: int
  sample: 10240
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
  sample: ["-- connected to pop3 127.0.0.1:110", "S: +OK ready", "C: CAPA"]
stage:
  description: Where the check failed.
  returned: on failure
  type: str
  sample: login
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mailops.health.plugins.module_utils import _args
from ansible_collections.mailops.health.plugins.module_utils._pop3 import pop3_check
from ansible_collections.mailops.health.plugins.module_utils._runner import run


def main():
    spec, required_if = _args.pop3_check_spec()
    module = AnsibleModule(argument_spec=spec, required_if=required_if, supports_check_mode=True)
    run(module, pop3_check)


if __name__ == '__main__':
    main()
