# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    # Options every mailops.health module has (module_utils/_args.py COMMON).
    DOCUMENTATION = r'''
options:
  timeout:
    description:
      - Seconds one connection may take from connect to the end of its dialogue, between V(1) and V(900).
      - Every read and write is bounded by this one deadline, so a server that answers one byte at a time
        cannot hold the check longer.
    type: int
    default: 60
  validate_certs:
    description:
      - Verify the server certificate (chain and host name) whenever TLS is used.
      - A certificate that fails verification fails the check at stage C(tls) in every C(tls_mode); it never
        makes a C(*_if_available) mode fall back to plaintext.
      - With V(false) the certificate is still reported in the C(tls) result but not checked. Use only for a lab.
    type: bool
    default: true
  ca_path:
    description:
      - A PEM file (or an OpenSSL hashed directory) of the CA certificates to trust instead of the system store.
    type: path
  allow_cleartext_auth:
    description:
      - Allow a reusable password (SMTP AUTH PLAIN or LOGIN, POP3 USER/PASS, IMAP LOGIN or AUTHENTICATE PLAIN) over a
        connection without TLS.
      - Challenge methods (SMTP and IMAP CRAM-MD5, POP3 APOP) never send the password and need no permission.
    type: bool
    default: false
  transcript:
    description:
      - Return the protocol dialogue in RV(transcript), for debugging.
      - Passwords, AUTH payloads and APOP digests are replaced by C(********).
    type: bool
    default: false
  warning_ms:
    description:
      - When the primary figure (response time, or total time of a round trip) is above this many milliseconds,
        the result has RV(status=warning) and Ansible shows a warning.
    type: float
  critical_ms:
    description:
      - When the primary figure is above this many milliseconds, the check fails at stage C(threshold).
    type: float
  retries:
    description:
      - How many times to try again after a failure before the check fails, between V(0) and V(10), as monitors wait
        for several failed scans before they call a service down. Each try is a whole check (a round trip sends a new
        mail; one that arrives after its try gave up stays until O(mailops.health.mail_roundtrip#module:cleanup_stale)
        removes it). Invalid input is never tried again.
      - The result's C(tries) and C(failed_tries) show every failed try's stage and message, also when a later try
        passed.
    type: int
    default: 0
  retry_delay:
    description:
      - Seconds between two tries, between V(0) and V(600).
    type: float
    default: 2.0
  retry_warning:
    description:
      - A check that passed only after a failed try has RV(status=warning) and a warning naming the failed tries, so
        a flapping service shows. V(false) makes it V(up).
    type: bool
    default: true
  address_family:
    description:
      - Which addresses of the host to connect to, as C(check_tcp -4/-6) and C(swaks -4/-6) choose.
      - V(any) tries every address the name resolves to, in the resolver's order.
    type: str
    choices: [any, ipv4, ipv6]
    default: any
  source_address:
    description:
      - The local IPv4 or IPv6 address to connect from, for a probe host with several addresses (C(swaks --local-interface),
        C(curl --interface)). Only addresses of its family are tried.
      - An address this host does not have fails at stage C(connect).
    type: str
  tls_min_version:
    description:
      - The oldest TLS version to accept. A server that offers only older versions fails at stage C(tls), saying so.
      - Default is what Python and OpenSSL on the managed node allow.
    type: str
    choices: [TLSv1, TLSv1.1, TLSv1.2, TLSv1.3]
  cert_warning_days:
    description:
      - When a server certificate seen by the check ends in fewer than this many days, the result has
        RV(status=warning) and a warning names the certificate, as C(check_smtp -D) does.
      - Applies to every TLS connection of the check (both sides of a round trip), also with O(validate_certs=false).
    type: int
  cert_critical_days:
    description:
      - When a server certificate ends in fewer than this many days, the check fails at stage C(certificate).
    type: int
notes:
  - Failures carry a machine-readable C(stage) (V(input), V(resolve), V(connect), V(banner), V(tls), V(certificate),
    V(helo), V(auth), V(mail_from), V(rcpt), V(data), V(login), V(stat), V(folders), V(select), V(search),
    V(retrieve), V(delete), V(quit), V(timeout), V(bounced), V(junk), V(authentication), V(expectation),
    V(threshold)) and a message naming the protocol, host and port and what the server said, with a hint where the
    probe can tell the likely cause (a STARTTLS mode against an implicit-TLS port, and the reverse).
  - Every string option is checked before anything is sent; a control character (CR, LF, NUL, ...) or a Unicode line
    separator fails at stage C(input) naming the option (see C(docs/security.md)).
  - Passwords are C(no_log). Ansible masks every occurrence of a C(no_log) value in the output, so a password that is
    also an ordinary word (such as C(auth)) garbles results; use long random passwords.
  - Only the Python standard library (Python 3.7 or newer) is needed on the managed node.
'''

    # host, port, tls_mode, username, password of a single-protocol check.
    ENDPOINT = r'''
options:
  host:
    description:
      - Name, IPv4 or IPv6 address of the server.
    type: str
    required: true
  port:
    description:
      - TCP port. Defaults by O(tls_mode) and protocol; implicit TLS (V(tls), V(tls_if_available)) uses 465 for SMTP,
        995 for POP3 and 993 for IMAP, the other modes 25, 110 and 143.
    type: int
  tls_mode:
    description:
      - Transport security.
      - V(none) speaks plaintext only.
      - V(starttls) connects in plaintext and requires the upgrade (SMTP and IMAP STARTTLS, POP3 STLS); a server that
        does not offer it fails at stage C(tls).
      - V(starttls_if_available) upgrades when the server offers it and otherwise goes on in plaintext with a warning
        and C(tls.established=false).
      - V(tls) speaks TLS from the first byte (ports 465, 995 and 993); a failed handshake fails.
      - V(tls_if_available) tries implicit TLS and reconnects in plaintext, with a warning, only when the server
        answers in plaintext.
    type: str
    choices: [none, starttls, starttls_if_available, tls, tls_if_available]
  tls_server_name:
    description:
      - The name sent in TLS SNI and checked against the certificate, when it differs from O(host)
        (one node of a cluster checked by its address while the certificate names the service).
      - Default is O(host).
    type: str
  username:
    description:
      - Account name to log in with.
    type: str
  password:
    description:
      - Password of O(username). Never returned, logged or shown in a transcript.
    type: str
  oauth2_token:
    description:
      - OAuth 2.0 access token of O(username), for the OAuth logins (SASL XOAUTH2 and OAUTHBEARER, RFC 7628), as
        hosted mailboxes (Microsoft 365, Google Workspace) require. M(mailops.health.oauth2_token) gets one with the
        client credentials grant.
      - Sent only over TLS, whatever O(allow_cleartext_auth) says. Never returned, logged or shown in a transcript, in
        any form (the SASL payload is base64 of a text that holds it).
      - When the server refuses the token, the failure says what its error challenge said (status, scope).
    type: str
'''

    # check_mode and diff_mode of every module: full check mode support, no diff. A module
    # says in its own check_mode description what check mode leaves out.
    ATTRIBUTES = r'''
attributes:
  check_mode:
    description: Can run in check mode and does the same as otherwise; the check is read-only.
    support: full
  diff_mode:
    description: Returns no diff.
    support: none
'''
