"""A round trip run on a separate managed node over SSH.

The node is a container (tests/remote/node/Dockerfile: Debian bookworm, sshd and the distribution's
python3, no pip, no ansible) on the Docker lab's engine, with host networking; its sshd listens on
127.0.0.1 on a free port and accepts one throwaway key made for this run. ansible-playbook, with
the collection installed from the tarball `ansible-galaxy collection build` makes, runs
tests/remote/roundtrip.yml there: the module works with nothing but the standard library.

Skipped unless the Docker lab is up (`make lab-up`); MAILOPS_LAB_DOCKER=0 skips it too. The
container is removed by its id at the end; the image stays, tagged by the hash of node/.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / 'node'
BIN = Path(sys.executable).parent
IMAGE = 'mailops-remote-node'
LABEL = 'io.mailops.remote-node'  # not the lab's label: lab.docker never sees these containers
SENDER, MAILBOX = 'alice', 'rt03'


def lab_description():
    if os.environ.get('MAILOPS_LAB_DOCKER', '').strip() == '0':
        pytest.skip('MAILOPS_LAB_DOCKER=0')
    status = subprocess.run([sys.executable, '-m', 'lab.docker', 'status'], cwd=ROOT, capture_output=True, text=True, check=False)
    if status.returncode != 0:
        pytest.skip('the Docker lab is not up (make lab-up)')
    describe = subprocess.run([sys.executable, '-m', 'lab.docker', 'describe', '--json'], cwd=ROOT, capture_output=True,
                              text=True, check=True)
    return json.loads(describe.stdout)


def image_tag():
    digest = hashlib.sha256()
    for path in sorted(p for p in NODE_DIR.rglob('*') if p.is_file()):
        digest.update(path.relative_to(NODE_DIR).as_posix().encode() + b'\0' + path.read_bytes() + b'\0')
    return '%s:%s' % (IMAGE, digest.hexdigest()[:16])


def ensure_image(client):
    """The node image for the current node/ content, built (host network, for apt) when missing;
    older tags of it are dropped."""
    import docker.errors
    tag = image_tag()
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        client.images.build(path=str(NODE_DIR), tag=tag, network_mode='host', pull=False, rm=True, forcerm=True,
                            labels={LABEL: '1'})
        for old in client.images.list(name=IMAGE):
            for old_tag in old.tags:
                if old_tag != tag:
                    client.images.remove(old_tag)  # the tag only; layers the new image shares stay
    return tag


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for_sshd(port, container, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=2) as sock:
                if sock.recv(64).startswith(b'SSH-'):
                    return
        except OSError:
            pass
        container.reload()
        if container.status != 'running':
            break
        time.sleep(0.2)
    raise AssertionError('sshd did not answer on 127.0.0.1:%d:\n%s' % (port, container.logs().decode(errors='replace')))


def read_file(container, path):
    stream, _stat = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b''.join(stream))) as tar:
        return tar.extractfile(tar.getmembers()[0]).read().decode()


@pytest.fixture(scope='module')
def lab():
    return lab_description()


@pytest.fixture(scope='module')
def engine(lab):
    from lab.docker import engine as lab_engine
    from lab.docker.config import state_dir
    found = lab_engine.find(state_dir())
    if found is None:
        pytest.skip('the Docker lab is up but its engine does not answer')
    return found


@pytest.fixture(scope='module')
def ssh_key(tmp_path_factory):
    key = tmp_path_factory.mktemp('ssh') / 'id_ed25519'
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'mailops-remote-test', '-f', str(key)], check=True)
    return key


@pytest.fixture(scope='module')
def node(engine, ssh_key, tmp_path_factory):
    """(port, known_hosts, container) of a running node; removed by id at the end."""
    tag = ensure_image(engine.client)
    port = free_port()
    container = engine.client.containers.run(
        tag, detach=True, network_mode='host', labels={LABEL: '1'},
        environment={'SSH_PORT': str(port), 'AUTHORIZED_KEY': ssh_key.with_suffix('.pub').read_text().strip()})
    try:
        wait_for_sshd(port, container)
        host_key = read_file(container, '/etc/ssh/ssh_host_ed25519_key.pub').split()
        known_hosts = tmp_path_factory.mktemp('known') / 'known_hosts'
        known_hosts.write_text('[127.0.0.1]:%d %s %s\n' % (port, host_key[0], host_key[1]))
        yield port, known_hosts, container
    finally:
        engine.client.api.remove_container(container.id, force=True)


def test_node_python_is_bare(node):
    _port, _known_hosts, container = node
    probe = ('import json, os, site; print(json.dumps({p: sorted(os.listdir(p)) for p in site.getsitepackages()'
             ' + [site.getusersitepackages()] if os.path.isdir(p)}))')
    code, out = container.exec_run(['python3', '-c', probe], user='probe')
    assert code == 0, out
    assert all(entries == [] for entries in json.loads(out).values()), out
    code, out = container.exec_run(['python3', '-c', 'import ansible'], user='probe')
    assert code != 0 and b'ModuleNotFoundError' in out
    code, out = container.exec_run(['python3', '-m', 'pip', '--version'], user='probe')
    assert code != 0, out
    code, out = container.exec_run(['sh', '-c', 'command -v pip pip3 ansible ansible-playbook'], user='probe')
    assert out.strip() == b'', out


def test_roundtrip_runs_on_the_remote_node(lab, node, ssh_key, installed_collections, tmp_path):
    port, known_hosts, container = node
    accounts = {a['username']: a for a in lab['accounts']}
    inventory = tmp_path / 'inventory.json'
    inventory.write_text(json.dumps({'all': {'hosts': {'node': {
        'ansible_host': '127.0.0.1', 'ansible_port': port, 'ansible_user': 'probe',
        'ansible_ssh_private_key_file': str(ssh_key), 'ansible_python_interpreter': '/usr/bin/python3',
        'ansible_ssh_common_args': '-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes' % known_hosts}}}}))
    variables = tmp_path / 'vars.json'
    variables.write_text(json.dumps({'remote_lab': {'host': lab['host'], 'ports': lab['ports'], 'ca_path': lab['ca_path']},
                                     'remote_sender': accounts[SENDER], 'remote_mailbox': accounts[MAILBOX]}))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(installed_collections), ANSIBLE_NOCOLOR='1',
               ANSIBLE_HOST_KEY_CHECKING='True', PATH='%s:%s' % (BIN, os.environ['PATH']))
    run = subprocess.run([str(BIN / 'ansible-playbook'), '-i', str(inventory), str(HERE / 'roundtrip.yml'),
                          '-e', '@%s' % variables], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert 'unreachable=0' in run.stdout and 'failed=0' in run.stdout, output
    assert 'remote node: mailops.health remote test node; mail_roundtrip up' in run.stdout, output
    for account in (SENDER, MAILBOX):
        assert accounts[account]['password'] not in output
    # Ansible reached the node over SSH with the throwaway key.
    assert 'Accepted publickey for probe' in container.logs().decode(errors='replace')
