#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: mail_roundtrip_batch
short_description: Run many mail round trips in one task
version_added: 0.1.0
description:
  - Runs many round trips of M(mailops.health.mail_roundtrip) in one module run, in threads. Ansible's cost per task
    (a fork, the module transfer, a Python start) is paid once for the whole batch instead of once per round trip.
  - Each probe sends a mail with a fresh token over SMTP, waits until exactly that mail is in its POP3 mailbox and
    deletes it, exactly as M(mailops.health.mail_roundtrip) does.
  - Probes that read the same POP3 mailbox (same host, port and user) run one after another; up to O(parallel)
    mailboxes are worked on at once.
  - >-
    Every probe is checked against the options of M(mailops.health.mail_roundtrip) before anything is sent; one
    invalid probe fails the task at stage C(input), naming the probe (C(probes[3]: missing required arguments:
    pop3_password)).
author:
  - mailops.health developers (@mailops-health)
extends_documentation_fragment:
  - mailops.health.common.attributes
attributes:
  check_mode:
    description:
      - In check mode every probe connects and logs in on both sides, sends nothing and deletes nothing, as
        M(mailops.health.mail_roundtrip) does in check mode.
options:
  probes:
    description:
      - The round trips to run. Each is a dictionary of the options of M(mailops.health.mail_roundtrip), with the same
        types, choices, defaults and requirements.
      - Each probe is laid over O(defaults); a key set to V(null) in a probe counts as not set. The options that
        M(mailops.health.mail_roundtrip) requires (such as O(mailops.health.mail_roundtrip#module:pop3_password)) are
        required of each probe laid over O(defaults).
      - Ansible checks the types and choices of every probe and refuses unknown keys before the module runs; the
        passwords are masked in the result, the warnings and the module's log, the other values (host and user names)
        are not.
      - Must hold at least one probe.
    type: list
    elements: dict
    required: true
    suboptions: &roundtrip_options
      address_family:
        description: O(mailops.health.mail_roundtrip#module:address_family).
        type: str
        choices: [any, ipv4, ipv6]
      allow_cleartext_auth:
        description: O(mailops.health.mail_roundtrip#module:allow_cleartext_auth).
        type: bool
      auth_mechanism:
        description: O(mailops.health.mail_roundtrip#module:auth_mechanism).
        type: list
        choices: [auto, plain, login, cram-md5, xoauth2, oauthbearer]
        elements: str
      authserv_ids:
        description: O(mailops.health.mail_roundtrip#module:authserv_ids).
        type: list
        elements: str
      ca_path:
        description: O(mailops.health.mail_roundtrip#module:ca_path).
        type: path
      cert_critical_days:
        description: O(mailops.health.mail_roundtrip#module:cert_critical_days).
        type: int
      cert_warning_days:
        description: O(mailops.health.mail_roundtrip#module:cert_warning_days).
        type: int
      cleanup_stale:
        description: O(mailops.health.mail_roundtrip#module:cleanup_stale).
        type: bool
      connection_interval:
        description: O(mailops.health.mail_roundtrip#module:connection_interval).
        type: float
      critical_ms:
        description: O(mailops.health.mail_roundtrip#module:critical_ms).
        type: float
      helo:
        description: O(mailops.health.mail_roundtrip#module:helo).
        type: str
      imap_auth_mechanism:
        description: O(mailops.health.mail_roundtrip#module:imap_auth_mechanism).
        type: str
        choices: [auto, login, plain, cram-md5, xoauth2, oauthbearer]
      imap_folder:
        description: O(mailops.health.mail_roundtrip#module:imap_folder).
        type: str
      imap_host:
        description: O(mailops.health.mail_roundtrip#module:imap_host).
        type: str
      imap_oauth2_token:
        description: O(mailops.health.mail_roundtrip#module:imap_oauth2_token).
        type: str
      imap_password:
        description: O(mailops.health.mail_roundtrip#module:imap_password).
        type: str
      imap_port:
        description: O(mailops.health.mail_roundtrip#module:imap_port).
        type: int
      imap_tls_mode:
        description: O(mailops.health.mail_roundtrip#module:imap_tls_mode).
        type: str
        choices: [none, starttls, starttls_if_available, tls, tls_if_available]
      imap_tls_server_name:
        description: O(mailops.health.mail_roundtrip#module:imap_tls_server_name).
        type: str
      imap_username:
        description: O(mailops.health.mail_roundtrip#module:imap_username).
        type: str
      junk:
        description: O(mailops.health.mail_roundtrip#module:junk).
        type: str
        choices: [ok, warn, fail]
      junk_folders:
        description: O(mailops.health.mail_roundtrip#module:junk_folders).
        type: list
        elements: str
      mail_from:
        description: O(mailops.health.mail_roundtrip#module:mail_from).
        type: str
      mail_to:
        description: O(mailops.health.mail_roundtrip#module:mail_to).
        type: str
      max_trip_time:
        description: O(mailops.health.mail_roundtrip#module:max_trip_time).
        type: int
      pop3_auth:
        description: O(mailops.health.mail_roundtrip#module:pop3_auth).
        type: str
        choices: [password, apop, xoauth2, oauthbearer]
      pop3_host:
        description: O(mailops.health.mail_roundtrip#module:pop3_host).
        type: str
      pop3_oauth2_token:
        description: O(mailops.health.mail_roundtrip#module:pop3_oauth2_token).
        type: str
      pop3_password:
        description: O(mailops.health.mail_roundtrip#module:pop3_password).
        type: str
      pop3_port:
        description: O(mailops.health.mail_roundtrip#module:pop3_port).
        type: int
      pop3_tls_mode:
        description: O(mailops.health.mail_roundtrip#module:pop3_tls_mode).
        type: str
        choices: [none, starttls, starttls_if_available, tls, tls_if_available]
      pop3_tls_server_name:
        description: O(mailops.health.mail_roundtrip#module:pop3_tls_server_name).
        type: str
      pop3_username:
        description: O(mailops.health.mail_roundtrip#module:pop3_username).
        type: str
      receive_protocol:
        description: O(mailops.health.mail_roundtrip#module:receive_protocol).
        type: str
        choices: [pop3, imap]
      require_authentication:
        description: O(mailops.health.mail_roundtrip#module:require_authentication).
        type: list
        choices: [spf, dkim, dmarc]
        elements: str
      retries:
        description: O(mailops.health.mail_roundtrip#module:retries).
        type: int
      retry_delay:
        description: O(mailops.health.mail_roundtrip#module:retry_delay).
        type: float
      retry_warning:
        description: O(mailops.health.mail_roundtrip#module:retry_warning).
        type: bool
      sender_host:
        description: O(mailops.health.mail_roundtrip#module:sender_host).
        type: str
      sender_oauth2_token:
        description: O(mailops.health.mail_roundtrip#module:sender_oauth2_token).
        type: str
      sender_password:
        description: O(mailops.health.mail_roundtrip#module:sender_password).
        type: str
      sender_port:
        description: O(mailops.health.mail_roundtrip#module:sender_port).
        type: int
      sender_protocol:
        description: O(mailops.health.mail_roundtrip#module:sender_protocol).
        type: str
        choices: [pop3, imap]
      sender_tls_mode:
        description: O(mailops.health.mail_roundtrip#module:sender_tls_mode).
        type: str
        choices: [none, starttls, starttls_if_available, tls, tls_if_available]
      sender_tls_server_name:
        description: O(mailops.health.mail_roundtrip#module:sender_tls_server_name).
        type: str
      sender_username:
        description: O(mailops.health.mail_roundtrip#module:sender_username).
        type: str
      smtp_auth:
        description: O(mailops.health.mail_roundtrip#module:smtp_auth).
        type: str
        choices: [none, password, oauth2]
      smtp_host:
        description: O(mailops.health.mail_roundtrip#module:smtp_host).
        type: str
      smtp_oauth2_token:
        description: O(mailops.health.mail_roundtrip#module:smtp_oauth2_token).
        type: str
      smtp_password:
        description: O(mailops.health.mail_roundtrip#module:smtp_password).
        type: str
      smtp_port:
        description: O(mailops.health.mail_roundtrip#module:smtp_port).
        type: int
      smtp_tls_mode:
        description: O(mailops.health.mail_roundtrip#module:smtp_tls_mode).
        type: str
        choices: [none, starttls, starttls_if_available, tls, tls_if_available]
      smtp_tls_server_name:
        description: O(mailops.health.mail_roundtrip#module:smtp_tls_server_name).
        type: str
      smtp_username:
        description: O(mailops.health.mail_roundtrip#module:smtp_username).
        type: str
      source_address:
        description: O(mailops.health.mail_roundtrip#module:source_address).
        type: str
      subject_prefix:
        description: O(mailops.health.mail_roundtrip#module:subject_prefix).
        type: str
      timeout:
        description: O(mailops.health.mail_roundtrip#module:timeout).
        type: int
      tls_min_version:
        description: O(mailops.health.mail_roundtrip#module:tls_min_version).
        type: str
        choices: [TLSv1, TLSv1.1, TLSv1.2, TLSv1.3]
      transcript:
        description: O(mailops.health.mail_roundtrip#module:transcript).
        type: bool
      validate_certs:
        description: O(mailops.health.mail_roundtrip#module:validate_certs).
        type: bool
      warning_ms:
        description: O(mailops.health.mail_roundtrip#module:warning_ms).
        type: float
      watch_bounces:
        description: O(mailops.health.mail_roundtrip#module:watch_bounces).
        type: bool
  defaults:
    description:
      - Options of M(mailops.health.mail_roundtrip) shared by every probe, such as
        O(mailops.health.mail_roundtrip#module:smtp_host), O(mailops.health.mail_roundtrip#module:pop3_host) and
        O(mailops.health.mail_roundtrip#module:ca_path). A probe's own value wins.
    type: dict
    default: {}
    suboptions: *roundtrip_options
  parallel:
    description:
      - How many mailboxes are worked on at once, between V(1) and V(200). Probes on one mailbox always run one after
        another, so more than the number of distinct mailboxes gains nothing.
    type: int
    default: 10
  fail_on:
    description:
      - V(any) fails the task when any probe fails, V(all) only when every probe fails, V(none) never. A task that
        does not fail still reports failed probes in RV(failed_count) and RV(results).
      - Invalid input fails the task whatever this says.
    type: str
    choices: [any, all, none]
    default: any
notes:
  - A failed task carries the C(stage) of its first failed probe, and each failed probe its own C(stage) in
    RV(results), with the values M(mailops.health.mail_roundtrip) uses plus V(internal) for a bug met by one probe
    (that probe fails, the others go on).
  - Only the Python standard library is needed on the managed node.
seealso:
  - module: mailops.health.mail_roundtrip
'''

EXAMPLES = r'''
- name: A mail sent now arrives in every monitored mailbox within 60 s
  mailops.health.mail_roundtrip_batch:
    defaults:
      smtp_host: mx.example.com
      smtp_port: 587
      smtp_tls_mode: starttls
      smtp_auth: password
      smtp_username: monitor@example.com
      smtp_password: "{{ vault_monitor_password }}"
      mail_from: monitor@example.com
      pop3_host: pop.example.com
      pop3_tls_mode: tls
      pop3_auth: apop
      max_trip_time: 60
      warning_ms: 5000
    # One probe per mailbox of the list monitored_mailboxes (items with address, user, password).
    probes: >-
      {%- set probes = [] -%}
      {%- for box in monitored_mailboxes -%}
      {%- set added = probes.append({'mail_to': box.address, 'pop3_username': box.user, 'pop3_password': box.password}) -%}
      {%- endfor -%}
      {{ probes }}
    parallel: 20
  register: trips

- name: Show the slowest round trip
  ansible.builtin.debug:
    msg: "{{ trips.ok }} round trips in {{ trips.wall_ms }} ms; slowest {{ trips.results | map(attribute='trip_time_ms') | max }} ms"

- name: Report failed mailboxes without failing the play
  mailops.health.mail_roundtrip_batch:
    defaults: "{{ roundtrip_defaults }}"
    probes:
      - {mail_to: sales@example.com, pop3_username: sales, pop3_password: "{{ vault_sales_password }}"}
      - {mail_to: support@example.com, pop3_username: support, pop3_password: "{{ vault_support_password }}"}
    fail_on: none
  register: trips

- name: List the mailboxes that did not receive their mail
  ansible.builtin.debug:
    msg: "{{ item.mailbox }} failed at {{ item.stage }}: {{ item.msg }}"
  loop: "{{ trips.results | rejectattr('ok') }}"
  loop_control:
    label: "{{ item.mailbox }}"
'''

RETURN = r'''
results:
  description: One entry per probe, in the order of O(probes).
  returned: when the probes ran
  type: list
  elements: dict
  sample:
    - {"index": 0, "mailbox": "rt06@pop.example.com:995", "ok": true, "status": "up", "token": "5f0c1d2e3a4b4c5d8e9f0a1b2c3d4e5f",
       "sent": true, "trip_time_ms": 112.5, "total_ms": 31.2, "attempts": 2, "stale_deleted": 0}
    - {"index": 1, "mailbox": "rt07@pop.example.com:995", "ok": false, "status": "down", "token": "0a1b2c3d4e5f40718293a4b5c6d7e8f9",
       "sent": false, "trip_time_ms": null, "total_ms": null, "attempts": 0, "stale_deleted": 0, "stage": "login",
       "msg": "pop3 pop.example.com:995: login failed: -ERR [AUTH] Authentication failed."}
  contains:
    index:
      description: Position of the probe in O(probes), from 0.
      returned: always
      type: int
      sample: 0
    mailbox:
      description: The POP3 mailbox the probe read, as C(user@host:port).
      returned: always
      type: str
      sample: rt06@pop.example.com:995
    ok:
      description: Whether the probe succeeded.
      returned: always
      type: bool
      sample: true
    status:
      description: As RV(mailops.health.mail_roundtrip#module:status) of M(mailops.health.mail_roundtrip).
      returned: always
      type: str
      sample: up
    token:
      description: The random token of the probe's test mail; V(null) when the probe failed before it was made.
      returned: always
      type: str
      sample: 5f0c1d2e3a4b4c5d8e9f0a1b2c3d4e5f
    sent:
      description: Whether the test mail was sent (V(false) in check mode).
      returned: always
      type: bool
      sample: true
    trip_time_ms:
      description: Milliseconds from the SMTP server accepting the mail to the probe seeing it in the mailbox;
        V(null) when it was not seen.
      returned: always
      type: float
      sample: 112.5
    total_ms:
      description: SMTP response time plus POP3 response time, in milliseconds; V(null) when the probe failed before
        both were measured.
      returned: always
      type: float
      sample: 31.2
    attempts:
      description: How many times the mailbox was checked after sending.
      returned: always
      type: int
      sample: 2
    stale_deleted:
      description: How many leftovers of earlier runs O(mailops.health.mail_roundtrip#module:cleanup_stale) deleted.
      returned: always
      type: int
      sample: 0
    path:
      description: The summary of the test mail's path, as RV(mailops.health.mail_roundtrip#module:path).
      returned: always (V(null) when the mail did not arrive)
      type: dict
      sample: {"hops": 4, "total_s": 1, "max_delay_s": 1, "clock_skew": false}
    authentication:
      description: The receiving side's verdicts, as RV(mailops.health.mail_roundtrip#module:authentication).
      returned: always (V(null) when the mail did not arrive)
      type: dict
      sample: {"spf": "pass", "dkim": "pass", "dmarc": "pass", "authserv_id": "mx.example.org"}
    bounce:
      description: The bounce that failed the probe, as RV(mailops.health.mail_roundtrip#module:bounce).
      returned: always (V(null) unless the probe failed at stage C(bounced))
      type: dict
      sample: null
    tries:
      description: How many tries the probe took, as RV(mailops.health.mail_roundtrip#module:tries).
      returned: always
      type: int
      sample: 1
    stage:
      description: Where the probe failed, as RV(mailops.health.mail_roundtrip#module:stage), or V(internal).
      returned: when the probe failed
      type: str
      sample: timeout
    msg:
      description: What failed, naming the protocol, host and port.
      returned: when the probe failed
      type: str
      sample: "pop3 pop.example.com:995: login failed: -ERR [AUTH] Authentication failed."
    transcript:
      description: The probe's dialogues with secrets masked, as RV(mailops.health.mail_roundtrip#module:transcript).
      returned: when the probe set O(mailops.health.mail_roundtrip#module:transcript=true)
      type: list
      elements: str
      sample: ["-- connected to pop3 127.0.0.1:110", "S: +OK ready"]
ok:
  description: How many probes succeeded.
  returned: when the probes ran
  type: int
  sample: 299
failed_count:
  description: How many probes failed.
  returned: when the probes ran
  type: int
  sample: 1
wall_ms:
  description: Milliseconds from the first probe starting to the last one ending.
  returned: when the probes ran
  type: float
  sample: 14210.4
round_trips_per_minute:
  description: Successful probes per minute of RV(wall_ms).
  returned: when the probes ran
  type: float
  sample: 1266.5
changed:
  description: V(true) only when O(mailops.health.mail_roundtrip#module:cleanup_stale) of some probe deleted a leftover of
    an earlier run.
  returned: always
  type: bool
  sample: false
stage:
  description: Where the task failed; V(input) for invalid input, else the stage of the first failed probe.
  returned: on failure
  type: str
  sample: login
'''

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.mailops.health.plugins.module_utils import _args
from ansible_collections.mailops.health.plugins.module_utils._batch import mail_roundtrip_batch
from ansible_collections.mailops.health.plugins.module_utils._probe import ProbeError, check_options
from ansible_collections.mailops.health.plugins.module_utils._runner import run


def set_values(params):
    """The keys of a probe (or of defaults) that are set: null counts as not set."""
    return dict((key, value) for key, value in (params or {}).items() if value is not None)


def checked_probes(module):
    """Every probe laid over defaults and validated against mail_roundtrip's own spec (what is
    required, and the defaults); the task fails at stage input, naming the probes, before anything
    is sent. Types, choices and unknown keys Ansible has checked already (batch_spec)."""
    spec, required_if = _args.roundtrip_spec()
    validator = ArgumentSpecValidator(spec, required_if=required_if)
    defaults = set_values(module.params['defaults'])
    probes, errors = [], []
    try:
        # Checked on their own too: a bad default is an error even where every probe overrides it.
        check_options(defaults)
    except ProbeError as e:
        errors.append('defaults: %s' % e.message)
    for index, probe in enumerate(module.params['probes']):
        result = validator.validate(dict(defaults, **set_values(probe)))
        errors.extend('probes[%d]: %s' % (index, error.msg) for error in result.errors)
        probes.append(result.validated_parameters)
    if errors:
        module.fail_json(msg='; '.join(errors), stage='input')
    return probes


def main():
    module = AnsibleModule(argument_spec=_args.batch_spec(), supports_check_mode=True)
    run(module, mail_roundtrip_batch, checked_probes(module), module.check_mode)


if __name__ == '__main__':
    main()
