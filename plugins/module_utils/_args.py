# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument specs shared by the modules, written once (documented once in doc_fragments)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.mailops.health.plugins.module_utils._probe import TLS_MODES
from ansible_collections.mailops.health.plugins.module_utils._pop3 import POP3_AUTH
from ansible_collections.mailops.health.plugins.module_utils._smtp import AUTH_MECHANISMS

# Options every module has (doc fragment mailops.health.common).
COMMON = dict(
    timeout=dict(type='int', default=60),
    validate_certs=dict(type='bool', default=True),
    ca_path=dict(type='path'),
    allow_cleartext_auth=dict(type='bool', default=False),
    transcript=dict(type='bool', default=False),
    warning_ms=dict(type='float'),
    critical_ms=dict(type='float'),
)

SMTP_AUTH = ('none', 'password')


def endpoint(prefix='', tls_default='tls'):
    """host, port, tls_mode, username and password, optionally prefixed (smtp_host, ...)."""
    spec = dict(
        host=dict(type='str', required=True),
        port=dict(type='int'),
        tls_mode=dict(type='str', choices=list(TLS_MODES), default=tls_default),
        username=dict(type='str'),
        password=dict(type='str', no_log=True),
    )
    return dict((prefix + key, value) for key, value in spec.items())


def smtp_auth(prefix=''):
    """SMTP AUTH choice; with smtp_auth=password the credentials are required."""
    spec = dict(smtp_auth=dict(type='str', choices=list(SMTP_AUTH), default='none'),
                auth_mechanism=dict(type='str', choices=list(AUTH_MECHANISMS), default='auto'),
                helo=dict(type='str'))
    required_if = [('smtp_auth', 'password', (prefix + 'username', prefix + 'password'))]
    return spec, required_if


def pop3_auth(prefix='', default='password'):
    spec = dict(pop3_auth=dict(type='str', choices=list(POP3_AUTH), default=default))
    required_if = [('pop3_auth', 'password', (prefix + 'username', prefix + 'password')),
                   ('pop3_auth', 'apop', (prefix + 'username', prefix + 'password'))]
    return spec, required_if


def roundtrip_spec():
    """mail_roundtrip's options, written once: its own argument spec, and the spec each probe of
    mail_roundtrip_batch is checked against. Returns (spec, required_if); fresh dicts every call."""
    smtp_auth_spec, required_if = smtp_auth(prefix='smtp_')
    spec = dict((key, dict(value)) for key, value in COMMON.items())
    spec.update(endpoint('smtp_', tls_default='starttls_if_available'))
    spec.update(endpoint('pop3_', tls_default='starttls_if_available'))
    spec.update(smtp_auth_spec)
    # A round trip always reads a mailbox: POP3 credentials are required whatever pop3_auth says.
    spec.update(pop3_auth()[0])
    spec['pop3_auth']['choices'] = ['password', 'apop']
    spec['pop3_username']['required'] = True
    spec['pop3_password']['required'] = True
    spec.update(
        mail_from=dict(type='str', required=True),
        mail_to=dict(type='str', required=True),
        subject_prefix=dict(type='str', default=''),
        connection_interval=dict(type='float', default=5),
        max_trip_time=dict(type='int', default=30),
        cleanup_stale=dict(type='bool', default=False),
    )
    return spec, required_if
