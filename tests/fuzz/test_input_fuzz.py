"""Hypothesis against the input contract: for every string option of every module (read from the
modules' argument specs, so an option or module added later is fuzzed too; suboptions such as
mail_roundtrip_batch's probes and defaults as well), hostile values (CR, LF, CRLF with a command behind it, NUL, VT, FF,
NEL, U+2028/U+2029, other C0/C1 controls, invalid IDN host names, values of 4097 to 100,000
characters, mixtures with valid text) go through the module's main() with every other option
valid, pointed at loopback listeners that count connections and bytes.

Properties: never stage internal, never a traceback, never the password (nor a piece of it) in
the output; a value the contract calls invalid (input_contract.py) fails at stage input, names
the option (an option with choices: Ansible's own refusal, which names it too) and nothing
reaches a listener or a name server. A valid but odd value may reach a server and fail there.

The number of examples follows FUZZ_EXAMPLES like test_fuzz.py (default 500): four times that,
spread over the options (at least 3 each; those with choices, which only meet Ansible's own
check, get FUZZ_EXAMPLES / 100). FUZZ_SEED repeats a run; the counts per module and
option are printed in the terminal summary (conftest.py).
"""

import os
import random

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from hostile_server import RUN
from input_contract import (
    INPUT_STATS, MODULES, PROTOCOLS, CountingListener, argument_spec, base_params, invalid, kind_of, loopback_only,
    option_name, string_options,
)
from tests.unit.helpers import run_module

SEED = RUN.setdefault('seed', int(os.environ.get('FUZZ_SEED') or random.SystemRandom().randrange(2 ** 32)))
# Options with choices only meet Ansible's own check: a few cases each, the rest for the others.
CHOICE_OPTIONS = [option for option in string_options() if option[2].get('choices')]
OPTIONS = [option for option in string_options() if not option[2].get('choices')]
CASES = 4 * int(os.environ.get('FUZZ_EXAMPLES') or 500)
PER_CHOICE_OPTION = max(2, CASES // 400)
PER_OPTION = max(3, (CASES - PER_CHOICE_OPTION * len(CHOICE_OPTIONS)) // len(OPTIONS))
FUZZ_SETTINGS = dict(deadline=None, print_blob=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                            HealthCheck.data_too_large, HealthCheck.large_base_example])

USERNAME = 'fuzz-user'
# Every password holds MARKER: it must never show in the output, whole or quoted in part (Ansible
# masks a no_log value only where it appears verbatim, not escaped inside a repr()).
MARKER = 'Pw-Marker-9d2e41'
PASSWORD = 'Fuzz-' + MARKER + '-x'

# -- values ---------------------------------------------------------------------------------------
FORBIDDEN = st.one_of(
    st.sampled_from(['\r', '\n', '\x00', '\x0b', '\x0c', '\x85', '\u2028', '\u2029', '\x7f', '\x1b', '\x9f']),
    st.characters(categories=['Cc']).filter(lambda c: c != '\t'),
)
INJECTION = st.one_of(
    st.sampled_from(['\r\nDELE 1', '\r\nDELE 1\r\nQUIT\r\n', '\r\n', '\n', '\r', '\nRSET', '\r\nRCPT TO:<evil@fuzz.test>',
                     '\r\n.\r\nMAIL FROM:<evil@fuzz.test>', '\x00DELE 1', '\x00', '\x0bSubject: injected', '\x85Bcc: x',
                     '\u2028Bcc: evil@fuzz.test', '\u2029', '\x1b[2J']),
    st.tuples(FORBIDDEN, st.sampled_from(['', 'DELE 1', 'QUIT', 'X'])).map(''.join),
)
SAFE_TEXT = st.text(alphabet=st.characters(exclude_categories=['Cc', 'Cs'], exclude_characters='\u2028\u2029'),
                    max_size=40)
BAD_HOSTS = ['', '.', 'a..b', '..test', 'a' * 64 + '.test', 'exa mple.test', 'ex@mple.test', 'host:25', '[::1]',
             '127.0.0.1 ', ' 127.0.0.1', '127.0.0.1\t', '\t127.0.0.1', 'ex\u3000ample.test', '\ufffd.test',
             '\u0627\u0031.test', 'a/b.test', 'mx.fuzz.test/', 'ex*mple.test', 'x' * 254,
             '.'.join(['a' * 63] * 4) + '.ab', '\u00df' * 70 + '.test', '127.0.0.1%lo', '127.0.0.1%lo0x']
ODD_HOSTS = ['localhost', 'xn--ls8h.test', '\U0001f4a9.test', 'b\u00fccher.test', 'under_score.test', 'x' * 63 + '.test',
             'ＡＢＣ.test', 'a\u200bb.test', '::1', '::1%lo']
BAD_HELOS = ['probe fuzz.test', 'pr\u00f8be.test', '[127.0.0.1', '-probe.test', 'probe..test', 'x' * 256, 'probe.test.',
             '[IPv6:::1', '<probe.test>', 'probe_test']
ODD_HELOS = ['[127.0.0.1]', '[IPv6:::1]', 'x' * 255, 'a.b.c.d.e.f']
BAD_ADDRESSES = ['', 'monitor', '<monitor@fuzz.test>', 'monitor@fuzz test', '"q"@fuzz.test', 'a@b@fuzz.test',
                 'monitor@fuzz.test>', 'x' * 245 + '@fuzz.test', 'monitor@[1.2.3.4', 'a,b@fuzz.test', 'a@fuzz.test,']
ODD_ADDRESSES = ['m\u00f6nitor@fuzz.test', 'x' * 240 + '@fuzz.test', 'monitor@[127.0.0.1]', 'a+b.c-d@fuzz.test']


@st.composite
def injected(draw, base):
    """base with something forbidden inserted somewhere (a command behind a line break, mostly)."""
    at = draw(st.integers(0, len(base)))
    return base[:at] + draw(INJECTION) + base[at:]


@st.composite
def long_value(draw, base, forbidden=False):
    size = draw(st.integers(4097, 100000))
    text = (base or 'x') * (size // max(1, len(base)) + 1)
    text = text[:size]
    if forbidden:
        at = draw(st.integers(0, size))
        text = text[:at] + draw(FORBIDDEN) + text[at:]
    return text


def hostile(kind, base):
    """Values for one option of kind (see input_contract.kind_of), mostly invalid ones."""
    common = [
        (6, injected(base)),
        (2, st.text(alphabet=FORBIDDEN, min_size=1, max_size=8)),
        (2, long_value(base)),
        (1, long_value(base, forbidden=True)),
        (2, st.tuples(SAFE_TEXT, FORBIDDEN, SAFE_TEXT).map(''.join)),
        # Valid but odd: a TAB, the longest allowed value, any printable text.
        (1, st.sampled_from([base + '\t', '\t' + base, 'a\tb'])),
        (1, st.sampled_from([((base or 'x') * 4096)[:4096], ((base or 'x') * 3000)[:3000]])),
        (1, SAFE_TEXT),
    ]
    extra = {
        'host': [(4, st.sampled_from(BAD_HOSTS)), (1, st.sampled_from(ODD_HOSTS)),
                 (2, st.tuples(st.sampled_from(['', 'mx.', 'a.']), SAFE_TEXT, st.sampled_from(['', '.test']))
                  .map(''.join))],
        'helo': [(3, st.sampled_from(BAD_HELOS)), (1, st.sampled_from(ODD_HELOS))],
        'address': [(3, st.sampled_from(BAD_ADDRESSES)), (1, st.sampled_from(ODD_ADDRESSES))],
        # A mail body may hold any line break: only NUL is refused.
        'text': [(4, st.tuples(SAFE_TEXT, st.sampled_from(['\r\n', '\n', '\r', '\x0b', '\x0c', '\x85', '\u2028',
                                                           '\r\n.\r\nQUIT\r\n', '\r\n.\r\n']), SAFE_TEXT)
                  .map(''.join))],
        'choice': [(1, st.sampled_from(['TLS', 'none ', 'password\x00', 'plain\r\n']))],
        'ip': [(3, st.sampled_from(['127.0.0.1%lo', '127.0.0.256', 'localhost', '::1%', '1.2.3', ' 127.0.0.1'])),
               (1, st.sampled_from(['127.0.0.1', '::1', '127.0.0.9']))],
    }.get(kind, [])
    weighted = [strategy for weight, strategy in common + extra for _copy in range(weight)]
    return st.sampled_from(weighted).flatmap(lambda strategy: strategy)


# -- the modules ----------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def listeners():
    running = dict((protocol, CountingListener(protocol)) for protocol in PROTOCOLS)
    yield running
    for listener in running.values():
        listener.close()


def _count(module, path, outcome, bad):
    option = path if isinstance(path, str) else '.'.join(path)
    stats = INPUT_STATS.setdefault(module, {}).setdefault(option, {})
    for key in ('cases', 'invalid' if bad else 'valid', outcome):
        stats[key] = stats.get(key, 0) + 1


def params_for(module, listeners):
    ports = dict((protocol, listener.port) for protocol, listener in listeners.items())
    return base_params(module, argument_spec(MODULES[module]), ports, USERNAME, PASSWORD)


def slot(params, path):
    """(dict, key) where the option at path lives: a batch probe's options go into probes[0]
    (the defaults' into the defaults dict)."""
    if isinstance(path, str):
        return params, path
    parent, option = path
    holder = params[parent]
    return (holder[0] if isinstance(holder, list) else holder), option


def base_value(params, path):
    if not isinstance(path, str) and path[0] == 'defaults':
        path = ('probes', path[1])  # what the probe would have had
    holder, option = slot(params, path)
    value = holder.get(option)
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else 'fuzz-%s' % option


def run_case(listeners, capsys, module, path, value):
    """main() of module with the option at path set to value and every other option valid: the
    result, and what reached the listeners (and the name resolver)."""
    params = params_for(module, listeners)
    holder, option = slot(params, path)
    holder[option] = value
    if not isinstance(path, str) and path[0] == 'defaults':
        # A default the probe overrides is never used: the probe takes this one.
        for probe in params.get('probes', []):
            probe.pop(option, None)
    for listener in listeners.values():
        listener.reset()
    with loopback_only() as resolved:
        result = run_module(capsys, MODULES[module], params)
    for listener in listeners.values():
        listener.settle()
    result['_connections'] = sum(listener.connections for listener in listeners.values())
    result['_received'] = sum(listener.received for listener in listeners.values())
    result['_resolved'] = resolved
    return result


def check_case(result, module, path, spec, value):
    """The properties (see the module docstring); counts the outcome for the summary."""
    option = option_name(path)
    bad = invalid(module if isinstance(path, str) else 'mail_roundtrip', option, spec, value)
    stage = result.get('stage')
    outcome = 'ok' if result['_rc'] == 0 else 'stage=%s' % stage if stage else 'refused by Ansible'
    _count(module, path, outcome, bad)
    raw, msg = result['_raw'], str(result.get('msg', ''))
    assert 'Traceback' not in raw and 'exception' not in result, msg
    assert stage != 'internal' and 'internal error' not in msg, msg
    assert MARKER not in raw, 'a piece of the password is shown: %s' % msg[:300]
    if not bad:
        return
    assert result['_rc'] == 1, 'an invalid value of %s was accepted' % option
    if stage is None:
        # Ansible's argument spec refused it before the module ran: only a value outside choices.
        assert spec.get('choices'), msg
    else:
        assert stage == 'input', msg[:300]
    assert option in msg, msg[:300]
    assert not result['_resolved'], 'an invalid value made the module resolve %r' % result['_resolved'][:3]
    assert (result['_connections'], result['_received']) == (0, 0), \
        'an invalid value reached a listener: %d connections, %d bytes' % (result['_connections'], result['_received'])


def case_id(module, path):
    return '%s-%s' % (module, path if isinstance(path, str) else '.'.join(path))


def hostile_case(listeners, capsys, module, path, spec, data):
    base = base_value(params_for(module, listeners), path)
    value = data.draw(hostile(kind_of(option_name(path), spec), base), label='value')
    if spec.get('type') == 'list':
        value = data.draw(st.sampled_from([[value], ['ok@fuzz.test', value], [value, 'ok@fuzz.test']]), label='list')
    check_case(run_case(listeners, capsys, module, path, value), module, path, spec, value)


@pytest.mark.parametrize('module,path,spec', OPTIONS, ids=[case_id(m, p) for m, p, _s in OPTIONS])
@seed(SEED)
@settings(max_examples=PER_OPTION, **FUZZ_SETTINGS)
@given(data=st.data())
def test_hostile_option_value(listeners, capsys, module, path, spec, data):
    hostile_case(listeners, capsys, module, path, spec, data)


@pytest.mark.parametrize('module,path,spec', CHOICE_OPTIONS, ids=[case_id(m, p) for m, p, _s in CHOICE_OPTIONS])
@seed(SEED)
@settings(max_examples=PER_CHOICE_OPTION, **FUZZ_SETTINGS)
@given(data=st.data())
def test_hostile_choice_value(listeners, capsys, module, path, spec, data):
    hostile_case(listeners, capsys, module, path, spec, data)


@pytest.mark.parametrize('module,path', [('pop3_check', 'host'), ('mail_roundtrip', 'smtp_host')])
def test_ipv4_address_with_a_zone_is_refused(listeners, capsys, module, path):
    """IPv4 has no zones: '127.0.0.1%lo' is neither an address nor a host name (once taken for an
    address, it went to getaddrinfo)."""
    spec = argument_spec(MODULES[module])[path]
    value = '127.0.0.1%lo'
    check_case(run_case(listeners, capsys, module, path, value), module, path, spec, value)


def test_invalid_default_that_every_probe_overrides_is_refused(listeners, capsys):
    module, path = 'mail_roundtrip_batch', ('defaults', 'helo')
    spec = argument_spec(MODULES[module])['defaults']['options']['helo']
    params = params_for(module, listeners)
    params['defaults'] = {'helo': 'probe.fuzz.test\r\nDELE 1'}  # params['probes'][0] has its own helo
    for listener in listeners.values():
        listener.reset()
    with loopback_only() as resolved:
        result = run_module(capsys, MODULES[module], params)
    for listener in listeners.values():
        listener.settle()
    result['_connections'] = sum(listener.connections for listener in listeners.values())
    result['_received'] = sum(listener.received for listener in listeners.values())
    result['_resolved'] = resolved
    check_case(result, module, path, spec, params['defaults']['helo'])
