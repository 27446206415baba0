"""Option builders for the core functions, pointed at the embedded lab, and a driver for the
modules' main()."""

import json

import pytest
from ansible.module_utils.testing import patch_module_args


def common(lab, **extra):
    params = dict(timeout=10, validate_certs=True, ca_path=lab.ca_path, allow_cleartext_auth=False,
                  transcript=True, warning_ms=None, critical_ms=None)
    params.update(extra)
    return params


def smtp_params(lab, variant, tls_mode, **extra):
    params = common(lab, host=lab.host, port=lab.ports[variant], tls_mode=tls_mode, smtp_auth='none',
                    auth_mechanism='auto', username='alice', password=lab.accounts['alice'], helo='probe.test',
                    send_mail=False, mail_from=None, mail_to=None, subject=None, body=None)
    params.update(extra)
    return params


def pop3_params(lab, variant, tls_mode, pop3_auth='none', user='alice', **extra):
    params = common(lab, host=lab.host, port=lab.ports[variant], tls_mode=tls_mode, pop3_auth=pop3_auth,
                    username=user, password=lab.accounts[user])
    params.update(extra)
    return params


def roundtrip_params(lab, smtp_variant='smtp', pop3_variant='pop3', user='bob', receive='pop3', imap_variant='imap',
                     **extra):
    """A round trip to user's mailbox, read over POP3 (APOP over STLS) or, with receive='imap',
    over IMAP (STARTTLS)."""
    params = common(lab, smtp_host=lab.host, smtp_port=lab.ports[smtp_variant], smtp_tls_mode='starttls',
                    smtp_auth='none', auth_mechanism='auto', smtp_username=None, smtp_password=None,
                    helo='probe.test', mail_from='monitor@lab.test', mail_to=lab.address(user),
                    receive_protocol=receive, pop3_host=lab.host, pop3_port=lab.ports[pop3_variant],
                    pop3_tls_mode='starttls', pop3_auth='apop', pop3_username=user, pop3_password=lab.accounts[user],
                    imap_host=None, imap_port=None, imap_tls_mode='starttls', imap_username=None, imap_password=None,
                    imap_auth_mechanism='auto', imap_folder='INBOX', junk_folders=None, junk='warn',
                    subject_prefix='[health]', connection_interval=0.5, max_trip_time=10)
    if receive == 'imap':
        params.update(imap_host=lab.host, imap_port=lab.ports[imap_variant], imap_username=user,
                      imap_password=lab.accounts[user], pop3_username=None, pop3_password=None)
    params.update(extra)
    return params


def run_module(capsys, module, args, check_mode=False):
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exit_info:
            module.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    result['_rc'] = exit_info.value.code
    result['_raw'] = out
    return result
