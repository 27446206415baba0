"""The input contract the input fuzz (test_input_fuzz.py) checks the modules against, and its tools:
the string options of every module read from the modules themselves (every module in
plugins/modules, suboptions too), valid values for the others, an oracle that says which
values the contract calls invalid, loopback listeners that count what reaches them, a guard that
keeps name resolution on loopback, and the run's figures for the terminal summary (conftest.py).

The contract (the core enforces it before any connection, failing at stage input with a message
that names the option and never quotes a password):
- every string option except body: no control character (Unicode category Cc, TAB allowed), no
  U+2028/U+2029, at most 4096 characters;
- body: no NUL (line breaks are its business);
- host options: an IP address, or a host name whose IDNA 2003 form (Python's 'idna' codec) is
  ASCII labels of letters, digits, '-' and '_', at most 253 characters (and maybe a final dot);
- helo: an ASCII host name or address literal, at most 255 characters;
- addresses (mail_from, each mail_to): a mail address as the core always required, at most 254
  characters (a round trip: mail_to exactly one);
- options with choices: one of them (Ansible's argument spec refuses the rest).
"""

import importlib
import ipaddress
import pkgutil
import re
import socket
import threading
import time
import unicodedata
from contextlib import contextmanager
from unittest import mock

from ansible_collections.mailops.health.plugins import modules as _modules

MAX_OPTION_LENGTH = 4096
TEXT_OPTIONS = ('body',)
ADDRESS_OPTIONS = ('mail_from', 'mail_to')
PROTOCOLS = ('smtp', 'pop3', 'imap')
# The mail address and HELO rules the core has always applied ("as today").
_ADDRESS = re.compile(r'^[^\s<>()\[\],;:@"]+@[A-Za-z0-9.\-]+$|^[^\s<>()\[\],;:@"]+@\[[0-9A-Fa-f:.]+\]$')
_HELO = re.compile(r'^(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*$'
                   r'|^\[[0-9A-Fa-f:.]+\]$|^\[IPv6:[0-9A-Fa-f:.]+\]$')
_LABEL = re.compile(r'^[A-Za-z0-9_-]+$')

# {module: {option: {outcome: count}}}, printed by conftest.py.
INPUT_STATS = {}


# -- the modules and their options ------------------------------------------------------------
class _Captured(Exception):
    pass


def argument_spec(module):
    """The argument spec module.main() hands to AnsibleModule (caught there, nothing runs)."""
    captured = {}

    def capture(argument_spec=None, **_kwargs):
        captured.update(argument_spec)
        raise _Captured()

    with mock.patch.object(module, 'AnsibleModule', capture):
        try:
            module.main()
        except _Captured:
            pass
    assert captured, 'no argument spec captured from %s' % module.__name__
    return captured


# Modules whose options are other modules' options one level further down (mail_checks: a check's
# smtp/pop3/imap/roundtrip options, the same spec and the same input rule as those modules):
# tests/unit/test_checks.py sends hostile values through them.
NESTED = ('mail_checks',)
# Modules that send nothing to a mail server: oauth2_token speaks HTTP to a token endpoint;
# tests/unit/test_oauth2_token_module.py checks its input.
NOT_MAIL = ('oauth2_token',)


def modules():
    """{name: module} of every module in plugins/modules."""
    return dict((info.name, importlib.import_module('%s.%s' % (_modules.__name__, info.name)))
                for info in pkgutil.iter_modules(_modules.__path__)
                if not info.name.startswith('_') and info.name not in NESTED + NOT_MAIL)


MODULES = modules()


def is_string_option(option):
    kind = option.get('type', 'str')
    return kind in ('str', 'path') or (kind == 'list' and option.get('elements') == 'str')


def string_options():
    """[(module, path, option spec)] for every string option of every module, also those of
    suboptions: path is the option's name, or (parent, name) for a suboption (a batch's probes
    and defaults), which the tests put into probes[0] or the defaults dict."""
    found = []
    for name, module in sorted(MODULES.items()):
        for option, spec in sorted(argument_spec(module).items()):
            if is_string_option(spec):
                found.append((name, option, spec))
            for sub, sub_spec in sorted((spec.get('options') or {}).items()):
                if is_string_option(sub_spec):
                    found.append((name, (option, sub), sub_spec))
    return found


def option_name(path):
    return path if isinstance(path, str) else path[1]


def kind_of(option, spec):
    if spec.get('choices'):
        return 'choice'
    if option == 'host' or option.endswith('_host') or option.endswith('tls_server_name'):
        return 'host'
    if option == 'source_address':
        return 'ip'
    if option == 'helo':
        return 'helo'
    if option in ADDRESS_OPTIONS:
        return 'address'
    if option in TEXT_OPTIONS:
        return 'text'
    return 'plain'


def protocol_of(module, option):
    """The protocol an option belongs to: its prefix (smtp_port), else the module's (pop3_check)."""
    for protocol in PROTOCOLS:
        if option.startswith(protocol + '_') or (module.startswith(protocol + '_') and '_' not in option):
            return protocol
    if option.startswith('sender_'):
        return 'imap'  # the sender's mailbox, read over sender_protocol (default imap)
    return None


def base_params(module, spec, ports, username, password):
    """Valid values for every option of spec (module's, or a batch probe's): loopback hosts, the
    counting listener of the option's protocol as port, tls_mode none, short timeouts, the given
    credentials, valid addresses; the rest as the spec says."""
    params = {}
    for option, opt in spec.items():
        kind = opt.get('type', 'str')
        name_kind = kind_of(option, opt)
        protocol = protocol_of(module, option)
        if opt.get('options'):
            sub = base_params('mail_roundtrip' if module == 'mail_roundtrip_batch' else module, opt['options'],
                              ports, username, password)
            params[option] = [sub] if kind == 'list' else {}
        elif option.endswith('tls_mode'):
            params[option] = 'none'
        elif option == 'port' or option.endswith('_port'):
            params[option] = ports[protocol]
        elif name_kind == 'host':
            params[option] = '127.0.0.1'
        elif option == 'helo':
            params[option] = 'probe.fuzz.test'
        elif option == 'mail_from':
            params[option] = 'monitor@fuzz.test'
        elif option == 'mail_to':
            params[option] = ['rcpt@fuzz.test'] if kind == 'list' else 'rcpt@fuzz.test'
        elif opt.get('no_log'):
            params[option] = password
        elif option.endswith('username'):
            params[option] = username
        elif option in ('timeout', 'max_trip_time', 'parallel'):
            params[option] = 1
        elif option == 'connection_interval':
            params[option] = 0.05
        elif option in ('allow_cleartext_auth', 'transcript', 'send_mail'):
            params[option] = True
        elif kind == 'str' and isinstance(opt.get('default'), str):
            params[option] = opt['default']
    return params


# -- the oracle -------------------------------------------------------------------------------
def forbidden_character(value):
    return any(c in '\u2028\u2029' or (c != '\t' and unicodedata.category(c) == 'Cc') for c in value)


def valid_host(value):
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        pass
    try:
        ascii_name = value.encode('idna').decode('ascii')
    except UnicodeError:
        return False
    # One trailing dot (the root of an absolute name, 'mx.example.') is part of a valid name.
    name = ascii_name[:-1] if ascii_name.endswith('.') else ascii_name
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split('.'))


def valid_ip(value):
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def valid_address(value):
    return len(value) <= 254 and bool(_ADDRESS.match(value))


def recipients(value):
    """mail_to as the core reads it: a list, or a comma-separated string."""
    items = value if isinstance(value, list) else [value]
    return [part.strip() for item in items for part in item.split(',') if part.strip()]


def invalid(module, option, spec, value):
    """Whether the contract calls value (a string, or a list for list options) invalid for option."""
    items = value if isinstance(value, list) else [value]
    kind = kind_of(option, spec)
    if kind == 'choice':
        return any(item not in spec['choices'] for item in items)
    if kind == 'text':
        return any('\0' in item for item in items)
    if any(forbidden_character(item) or len(item) > MAX_OPTION_LENGTH for item in items):
        return True
    if kind == 'host':
        return not all(valid_host(item) for item in items)
    if kind == 'ip':
        return not all(valid_ip(item) for item in items)
    if kind == 'helo':
        return not all(len(item) <= 255 and item.isascii() and _HELO.match(item) for item in items)
    if kind == 'address':
        addresses = recipients(value) if option == 'mail_to' else items
        if option == 'mail_to' and module != 'smtp_check' and len(addresses) != 1:
            return True
        return not addresses or not all(valid_address(address) for address in addresses)
    return False


# -- the listeners ----------------------------------------------------------------------------
class CountingListener:
    """A loopback port that greets like a server of its protocol, refuses the first command and
    hangs up, counting connections and the bytes received. settle() returns only once every
    connection made before it has been served (a sentinel connection queues up behind them)."""

    GREETING = {'smtp': b'220 fuzz.test ESMTP counting listener\r\n', 'pop3': b'+OK counting listener\r\n',
                'imap': b'* OK counting listener\r\n'}
    REFUSAL = {'smtp': b'554 5.7.1 no service\r\n', 'pop3': b'-ERR no service\r\n', 'imap': b'%s BAD no service\r\n'}

    def __init__(self, protocol):
        self.protocol = protocol
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.connections = 0
        self.received = 0
        self.sentinels = set()
        self.served_sentinels = set()
        self.thread = threading.Thread(target=self._serve, name='counting-%s' % protocol, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with self.lock:
                if peer in self.sentinels:
                    self.served_sentinels.add(peer)
                    conn.close()
                    continue
                self.connections += 1
            self._talk(conn)

    def _talk(self, conn):
        conn.settimeout(1.0)
        try:
            conn.sendall(self.GREETING[self.protocol])
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                with self.lock:
                    self.received += len(data)
                if b'\n' in data:
                    refusal = self.REFUSAL[self.protocol]
                    if b'%s' in refusal:  # IMAP: tagged with the command's tag
                        refusal = refusal % ((data.split() or [b'*'])[0],)
                    conn.sendall(refusal)
                    break
        except OSError:
            pass
        finally:
            conn.close()

    def reset(self):
        with self.lock:
            self.connections = self.received = 0

    def settle(self, limit=5.0):
        sentinel = socket.socket()
        try:
            sentinel.bind(('127.0.0.1', 0))
            with self.lock:
                self.sentinels.add(sentinel.getsockname())
            sentinel.connect(('127.0.0.1', self.port))
            end = time.monotonic() + limit
            while time.monotonic() < end:
                with self.lock:
                    if sentinel.getsockname() in self.served_sentinels:
                        return
                time.sleep(0.001)
            raise AssertionError('the %s listener did not get to the sentinel connection' % self.protocol)
        finally:
            sentinel.close()

    def close(self):
        self.sock.close()


# -- name resolution stays on loopback ---------------------------------------------------------
def _loopback(name):
    if name is None:
        return True
    if isinstance(name, bytes):
        name = name.decode('ascii', 'replace')
    if name in ('localhost', 'localhost.'):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@contextmanager
def loopback_only():
    """Resolving anything but a loopback name or address raises as an unknown name would, and is
    noted in the list this yields: hostile host values must never make a DNS query."""
    attempts = []
    real_getaddrinfo, real_byname, real_byname_ex, real_byaddr = (
        socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex, socket.gethostbyaddr)

    def guard(real, error):
        def call(name, *args, **kwargs):
            if _loopback(name):
                return real(name, *args, **kwargs)
            attempts.append(name)
            raise error
        return call

    unknown = socket.gaierror(socket.EAI_NONAME, 'Name or service not known (fuzz: loopback only)')
    with mock.patch.object(socket, 'getaddrinfo', guard(real_getaddrinfo, unknown)), \
            mock.patch.object(socket, 'gethostbyname', guard(real_byname, unknown)), \
            mock.patch.object(socket, 'gethostbyname_ex', guard(real_byname_ex, unknown)), \
            mock.patch.object(socket, 'gethostbyaddr', guard(real_byaddr, socket.herror(1, 'fuzz: loopback only'))):
        yield attempts
