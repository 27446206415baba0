#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: imap_check
short_description: Check that an IMAP server accepts connections, TLS and a login
version_added: 0.1.0
description:
  - Connects to an IMAP server, reads its greeting and capabilities, negotiates transport security as O(tls_mode) says,
    optionally logs in (LOGIN, AUTHENTICATE PLAIN or CRAM-MD5) and reads the STATUS of a folder, then logs out.
  - After STARTTLS the capabilities are asked for again; what the server said before the handshake is not trusted. A
    C(PREAUTH) greeting with O(tls_mode=starttls) fails at stage C(tls), because it skips the upgrade.
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
  imap_auth:
    description:
      - V(none) checks the connection without logging in; V(password) logs in with O(username) and O(password);
        V(oauth2) with O(username) and O(oauth2_token) (AUTHENTICATE OAUTHBEARER or XOAUTH2).
    type: str
    choices: [none, password, oauth2]
    default: none
  auth_mechanism:
    description:
      - V(login) uses the LOGIN command, V(plain) AUTHENTICATE PLAIN (with an initial response when the server has
        SASL-IR), V(cram-md5) AUTHENTICATE CRAM-MD5, which never sends the password.
      - V(auto) picks the first the server allows of CRAM-MD5, PLAIN and LOGIN, skipping PLAIN and LOGIN on a
        connection without TLS unless O(allow_cleartext_auth) is set. LOGIN is never used when the server says
        C(LOGINDISABLED).
      - With O(imap_auth=oauth2), V(auto) (OAUTHBEARER when offered, else XOAUTH2), V(xoauth2) or V(oauthbearer).
    type: str
    choices: [auto, login, plain, cram-md5, xoauth2, oauthbearer]
    default: auto
  folder:
    description:
      - The folder whose STATUS is returned in RV(folder) after a login.
    type: str
    default: INBOX
  folders:
    description:
      - Folders that must exist (LIST); a missing one fails the check at stage C(folders).
    type: list
    elements: str
seealso:
  - module: mailops.health.pop3_check
  - module: mailops.health.mail_roundtrip
'''

EXAMPLES = r'''
- name: The monitor account can log in over STARTTLS and its Junk folder exists
  mailops.health.imap_check:
    host: mail.example.com
    tls_mode: starttls
    imap_auth: password
    username: monitor
    password: "{{ vault_monitor_password }}"
    folders: [Junk]
  register: imap

- name: Warn when the monitor mailbox fills up
  ansible.builtin.assert:
    that: imap.folder.messages < 100
    fail_msg: "{{ imap.folder.messages }} messages are waiting in the monitor mailbox"

- name: Only check that IMAP over implicit TLS answers within a second
  mailops.health.imap_check:
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
  description: Milliseconds from connect to the server's reply to LOGOUT.
  returned: always
  type: float
  sample: 14.8
timings:
  description: Milliseconds from connect at which each step ended (connect, banner, tls, login).
  returned: always
  type: dict
  sample: {"connect_ms": 0.3, "banner_ms": 1.0, "tls_ms": 10.2, "login_ms": 12.9}
host:
  description: The server checked.
  returned: always
  type: str
  sample: mail.example.com
port:
  description: The port used (after the default for the mode was applied).
  returned: always
  type: int
  sample: 993
banner:
  description: The server's greeting, without C(* OK) and its response code.
  returned: when the server greeted
  type: str
  sample: Dovecot ready.
preauth:
  description: V(true) when the server greeted with C(PREAUTH) (already logged in, no login was sent).
  returned: when the server greeted with PREAUTH
  type: bool
  sample: true
capabilities:
  description: The server's capabilities (after STARTTLS when TLS was negotiated, before the login).
  returned: when the server greeted
  type: list
  elements: str
  sample: ["IMAP4rev1", "SASL-IR", "IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "AUTH=PLAIN"]
capabilities_before_tls:
  description: The capabilities the server announced before STARTTLS (not trusted; for comparison).
  returned: when STARTTLS was negotiated
  type: list
  elements: str
  sample: ["IMAP4rev1", "STARTTLS", "LOGINDISABLED"]
auth_mechanism_used:
  description: The mechanism used to log in.
  returned: when O(imap_auth=password)
  type: str
  sample: cram-md5
folder:
  description: The STATUS of O(folder).
  returned: after a login
  type: dict
  contains:
    name:
      description: The folder.
      type: str
      returned: always
      sample: INBOX
    messages:
      description: Messages in the folder.
      type: int
      returned: always
      sample: 3
    unseen:
      description: Messages without the C(\Seen) flag.
      type: int
      returned: always
      sample: 1
    uidnext:
      description: The UID the next message will get.
      type: int
      returned: always
      sample: 42
    uidvalidity:
      description: The folder's UIDVALIDITY.
      type: int
      returned: always
      sample: 1733400000
folders:
  description: Every folder the server lists.
  returned: when O(folders) was given
  type: list
  elements: str
  sample: ["INBOX", "Junk", "Sent", "Trash"]
tls:
  description: Transport security facts, as M(mailops.health.smtp_check) returns them.
  returned: always
  type: dict
  sample: {"established": true, "fallback": false, "version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "verified": true,
           "subject": "CN=mail.example.com", "issuer": "CN=Example CA", "sans": ["DNS:mail.example.com"],
           "not_after": "2027-03-01T12:00:00Z", "days_left": 98}
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
  sample: ["-- connected to imap 127.0.0.1:143", "S: * OK [CAPABILITY IMAP4rev1 STARTTLS] ready", "C: A001 STARTTLS"]
stage:
  description: Where the check failed.
  returned: on failure
  type: str
  sample: login
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mailops.health.plugins.module_utils import _args
from ansible_collections.mailops.health.plugins.module_utils._imap import imap_check
from ansible_collections.mailops.health.plugins.module_utils._runner import run


def main():
    spec, required_if = _args.imap_check_spec()
    module = AnsibleModule(argument_spec=spec, required_if=required_if, supports_check_mode=True)
    run(module, imap_check)


if __name__ == '__main__':
    main()
