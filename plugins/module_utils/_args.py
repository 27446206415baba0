# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument specs shared by the modules, written once (documented once in doc_fragments). The
defaults are the core's own constants."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.mailops.health.plugins.module_utils._batch import CHECK_TYPES, DEFAULT_PARALLEL, FAIL_ON
from ansible_collections.mailops.health.plugins.module_utils._imap import DEFAULT_FOLDER, IMAP_AUTH, IMAP_MECHANISMS
from ansible_collections.mailops.health.plugins.module_utils._pop3 import POP3_AUTH
from ansible_collections.mailops.health.plugins.module_utils._probe import DEFAULT_RETRY_DELAY, DEFAULT_TIMEOUT
from ansible_collections.mailops.health.plugins.module_utils._roundtrip import (
    AUTH_METHODS, DEFAULT_CONNECTION_INTERVAL, DEFAULT_MAX_TRIP_TIME, JUNK_POLICIES, RECEIVE_PROTOCOLS,
)
from ansible_collections.mailops.health.plugins.module_utils._session import ADDRESS_FAMILIES, TLS_MODES, TLS_VERSIONS
from ansible_collections.mailops.health.plugins.module_utils._smtp import (
    AUTH_MECHANISMS, DEFAULT_BODY, DEFAULT_SUBJECT, EXPECT_STAGES, EXPECTATIONS, SMTP_AUTH,
)


def common():
    """Options every module has (doc fragment mailops.health.common)."""
    return dict(
        timeout=dict(type='int', default=DEFAULT_TIMEOUT),
        validate_certs=dict(type='bool', default=True),
        ca_path=dict(type='path'),
        allow_cleartext_auth=dict(type='bool', default=False),
        transcript=dict(type='bool', default=False),
        warning_ms=dict(type='float'),
        critical_ms=dict(type='float'),
        retries=dict(type='int', default=0),
        retry_delay=dict(type='float', default=DEFAULT_RETRY_DELAY),
        retry_warning=dict(type='bool', default=True),
        address_family=dict(type='str', choices=list(ADDRESS_FAMILIES), default='any'),
        source_address=dict(type='str'),
        tls_min_version=dict(type='str', choices=list(TLS_VERSIONS)),
        cert_warning_days=dict(type='int'),
        cert_critical_days=dict(type='int'),
    )


def endpoint(prefix='', tls_default='tls'):
    """host, port, tls_mode, username and password, optionally prefixed (smtp_host, ...)."""
    spec = dict(
        host=dict(type='str', required=True),
        port=dict(type='int'),
        tls_mode=dict(type='str', choices=list(TLS_MODES), default=tls_default),
        tls_server_name=dict(type='str'),
        username=dict(type='str'),
        password=dict(type='str', no_log=True),
        oauth2_token=dict(type='str', no_log=True),
    )
    return dict((prefix + key, value) for key, value in spec.items())


def smtp_auth(prefix=''):
    """SMTP AUTH choice; with smtp_auth=password the credentials are required."""
    spec = dict(smtp_auth=dict(type='str', choices=list(SMTP_AUTH), default='none'),
                auth_mechanism=dict(type='list', elements='str', choices=list(AUTH_MECHANISMS), default=['auto']),
                helo=dict(type='str'))
    required_if = [('smtp_auth', 'password', (prefix + 'username', prefix + 'password')),
                   ('smtp_auth', 'oauth2', (prefix + 'username', prefix + 'oauth2_token'))]
    return spec, required_if


def pop3_auth(prefix='', default='password'):
    spec = dict(pop3_auth=dict(type='str', choices=list(POP3_AUTH), default=default))
    required_if = [('pop3_auth', 'password', (prefix + 'username', prefix + 'password')),
                   ('pop3_auth', 'apop', (prefix + 'username', prefix + 'password')),
                   ('pop3_auth', 'xoauth2', (prefix + 'username', prefix + 'oauth2_token')),
                   ('pop3_auth', 'oauthbearer', (prefix + 'username', prefix + 'oauth2_token'))]
    return spec, required_if


def smtp_check_spec():
    auth_spec, required_if = smtp_auth()
    spec = dict(common(), **endpoint(tls_default='tls'))
    spec.update(auth_spec)
    spec.update(
        send_mail=dict(type='bool', default=False),
        expect=dict(type='str', choices=list(EXPECTATIONS), default='accept'),
        expect_stage=dict(type='str', choices=list(EXPECT_STAGES)),
        mail_from=dict(type='str'),
        mail_to=dict(type='list', elements='str'),
        subject=dict(type='str', default=DEFAULT_SUBJECT),
        body=dict(type='str', default=DEFAULT_BODY),
    )
    return spec, required_if + [('send_mail', True, ('mail_from', 'mail_to')), ('expect_stage', 'rcpt', ('mail_from', 'mail_to')),
                                ('expect_stage', 'mail_from', ('mail_from',))]


def pop3_check_spec():
    auth_spec, required_if = pop3_auth(default='none')
    spec = dict(common(), **endpoint(tls_default='starttls_if_available'))
    spec.update(auth_spec)
    return spec, required_if


def imap_check_spec():
    spec = dict(common(), **endpoint(tls_default='starttls_if_available'))
    spec.update(
        imap_auth=dict(type='str', choices=list(IMAP_AUTH), default='none'),
        auth_mechanism=dict(type='str', choices=list(IMAP_MECHANISMS), default='auto'),
        folder=dict(type='str', default=DEFAULT_FOLDER),
        folders=dict(type='list', elements='str'),
    )
    return spec, [('imap_auth', 'password', ('username', 'password')),
                  ('imap_auth', 'oauth2', ('username', 'oauth2_token'))]


def roundtrip_spec():
    """mail_roundtrip's options, written once: its own argument spec, and the spec each probe of
    mail_roundtrip_batch is checked against. Returns (spec, required_if); fresh dicts every call."""
    smtp_auth_spec, required_if = smtp_auth(prefix='smtp_')
    spec = common()
    spec.update(endpoint('smtp_', tls_default='starttls_if_available'))
    spec.update(endpoint('pop3_', tls_default='starttls_if_available'))
    spec.update(endpoint('imap_', tls_default='starttls_if_available'))
    spec.update(smtp_auth_spec)
    # The receive side: POP3 (as before) or IMAP; the chosen side's host and credentials are
    # required, whatever pop3_auth says (a round trip always reads a mailbox).
    spec.update(pop3_auth()[0])
    spec['pop3_auth']['choices'] = [choice for choice in POP3_AUTH if choice != 'none']
    spec.update(endpoint('sender_', tls_default='starttls_if_available'))
    for key in ('pop3_host', 'imap_host', 'sender_host'):
        spec[key]['required'] = False
    required_if = required_if + [
        ('receive_protocol', 'pop3', ('pop3_host', 'pop3_username')),
        ('receive_protocol', 'pop3', ('pop3_password', 'pop3_oauth2_token'), True),
        ('receive_protocol', 'imap', ('imap_host', 'imap_username')),
        ('receive_protocol', 'imap', ('imap_password', 'imap_oauth2_token'), True),
    ]
    spec.update(
        receive_protocol=dict(type='str', choices=list(RECEIVE_PROTOCOLS), default='pop3'),
        imap_auth_mechanism=dict(type='str', choices=list(IMAP_MECHANISMS), default='auto'),
        imap_folder=dict(type='str', default=DEFAULT_FOLDER),
        junk_folders=dict(type='list', elements='str'),
        junk=dict(type='str', choices=list(JUNK_POLICIES), default='warn'),
        mail_from=dict(type='str', required=True),
        mail_to=dict(type='str', required=True),
        subject_prefix=dict(type='str', default=''),
        connection_interval=dict(type='float', default=DEFAULT_CONNECTION_INTERVAL),
        max_trip_time=dict(type='int', default=DEFAULT_MAX_TRIP_TIME),
        cleanup_stale=dict(type='bool', default=False),
        watch_bounces=dict(type='bool', default=True),
        sender_protocol=dict(type='str', choices=list(RECEIVE_PROTOCOLS), default='imap'),
        require_authentication=dict(type='list', elements='str', choices=list(AUTH_METHODS), default=[]),
        authserv_ids=dict(type='list', elements='str'),
    )
    return spec, required_if


def loose(spec):
    """spec with nothing required and no defaults: the shape of a batch's probes and defaults,
    which are complete only once laid over each other."""
    return dict((key, dict((k, v) for k, v in option.items() if k not in ('required', 'default')))
                for key, option in spec.items())


def batch_spec():
    """mail_roundtrip_batch's options: probes and defaults as suboptions (so Ansible checks their
    types and choices and masks their passwords); required options and defaults are applied
    to each probe laid over defaults (see the module)."""
    suboptions = loose(roundtrip_spec()[0])
    return dict(
        probes=dict(type='list', elements='dict', required=True, options=suboptions),
        defaults=dict(type='dict', default={}, options=loose(roundtrip_spec()[0])),
        parallel=dict(type='int', default=DEFAULT_PARALLEL),
        fail_on=dict(type='str', choices=list(FAIL_ON), default='any'),
    )


def check_specs():
    """{check type: (spec, required_if)} of the checks mail_checks runs."""
    return dict(smtp=smtp_check_spec(), pop3=pop3_check_spec(), imap=imap_check_spec(), roundtrip=roundtrip_spec())


def checks_spec():
    """mail_checks' options: each check names its type by the one key it sets (smtp, pop3, imap or
    roundtrip), whose suboptions are that module's options (loose: required options and defaults
    are applied to each check laid over defaults, see the module)."""
    check = dict(name=dict(type='str', required=True))
    for kind, (spec, _required_if) in check_specs().items():
        check[kind] = dict(type='dict', options=loose(spec))
    return dict(
        checks=dict(type='list', elements='dict', required=True, options=check,
                    mutually_exclusive=[list(CHECK_TYPES)], required_one_of=[list(CHECK_TYPES)]),
        defaults=dict(type='dict', default={}, options=loose(common())),
        parallel=dict(type='int', default=DEFAULT_PARALLEL),
        fail_on=dict(type='str', choices=list(FAIL_ON), default='any'),
    )
