#!/bin/sh
# Install the one authorized key for user probe, then run sshd in the foreground on
# 127.0.0.1:$SSH_PORT (host networking), logging to the container's output.
set -eu
: "${SSH_PORT:?SSH_PORT is required}"
: "${AUTHORIZED_KEY:?AUTHORIZED_KEY is required}"
install -d -m 0700 -o probe -g probe /home/probe/.ssh
printf '%s\n' "$AUTHORIZED_KEY" > /home/probe/.ssh/authorized_keys
chown probe:probe /home/probe/.ssh/authorized_keys
chmod 0600 /home/probe/.ssh/authorized_keys
exec /usr/sbin/sshd -D -e -p "$SSH_PORT" -o ListenAddress=127.0.0.1 \
    -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no -o PermitRootLogin=no \
    -o AllowUsers=probe
