# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one bridge between a module and the core: run the core, map its result or its
ProbeError to exit_json / fail_json. Takes the module object; imports nothing from Ansible."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import sys
import traceback

from ansible_collections.mailops.health.plugins.module_utils._probe import PYTHON_FLOOR, ProbeError, Secrets


def run(module, core, *args):
    if sys.version_info < PYTHON_FLOOR:
        module.fail_json(msg='mailops.health needs Python %s or newer on the managed node; %s is Python %s'
                         % ('.'.join(map(str, PYTHON_FLOOR)), sys.executable, sys.version.split()[0]),
                         stage='input', status='down')
    try:
        result = core(module.params, *args)
    except ProbeError as e:
        for warning in e.result.pop('warnings', []):
            module.warn(warning)
        module.fail_json(msg=e.message, stage=e.stage, **e.result)
    except Exception as e:  # a bug of ours: still a clear failure, the traceback only with -vvv
        secrets = Secrets.of(module.params)
        module.fail_json(msg=secrets.redact('internal error: %s: %s' % (type(e).__name__, e)), stage='internal',
                         status='down', exception=secrets.redact(traceback.format_exc()))
    for warning in result.pop('warnings', []):
        module.warn(warning)
    result.setdefault('changed', False)
    module.exit_json(**result)
