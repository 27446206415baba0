"""Turn a lab description (`describe --json` of a lab) into the health_* variables of
playbooks/health_gate.yml, so the same playbook runs against either lab.

    python -m lab.playbook_vars describe.json > vars.json
"""

import json
import sys


def playbook_vars(describe, sender='alice', receiver='bob'):
    accounts = {a['username']: a for a in describe['accounts']}
    ports = describe['ports']
    return {
        'health_host': describe['host'],
        'health_ca_path': describe['ca_path'],
        # The embedded lab names its listeners by variant, the Docker lab by service.
        'health_smtp_port': ports.get('submission', ports.get('smtp')),
        'health_smtp_tls_mode': 'starttls',
        'health_smtp_user': accounts[sender]['username'],
        'health_smtp_user_address': accounts[sender]['address'],
        'health_smtp_password': accounts[sender]['password'],
        'health_pop3_port': ports.get('pop3s', ports.get('pop3_tls')),
        'health_pop3_tls_mode': 'tls',
        'health_pop3_auth': 'apop',
        'health_pop3_user': accounts[receiver]['username'],
        'health_pop3_password': accounts[receiver]['password'],
        'health_mail_to': accounts[receiver]['address'],
    }


def main(argv):
    with open(argv[1]) as f:
        json.dump(playbook_vars(json.load(f)), sys.stdout, indent=2)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main(sys.argv)
