#!/usr/bin/env bash
# Configure Postfix from LAB_* variables and run it in the foreground
# (`postfix start-fg`), logging to the container's stdout.
#
#   LAB_DOMAIN                 virtual mailbox domain (default lab.test)
#   LAB_LISTEN                 addresses to listen on (default: 127.0.0.1, plus ::1 if present)
#   LAB_PORT_SMTP              25    STARTTLS offered, not required
#   LAB_PORT_SUBMISSION        587   STARTTLS and AUTH required
#   LAB_PORT_SMTPS             465   implicit TLS, AUTH
#   LAB_PORT_SMTP_NOSTARTTLS   2525  no STARTTLS (negative case)
#   LAB_PORT_SMTP_BADCERT      4465  implicit TLS, certificate from a rogue CA
#   LAB_PORT_LMTP              24    Dovecot LMTP (delivery target)
#   LAB_PORT_SASL              12345 Dovecot auth (SMTP AUTH)
#
# /lab (mounted read-only): certs/server.{pem,key}, certs/rogue.{pem,key}, users.
set -euo pipefail

DOMAIN=${LAB_DOMAIN:-lab.test}
P_SMTP=${LAB_PORT_SMTP:-25}
P_SUBMISSION=${LAB_PORT_SUBMISSION:-587}
P_SMTPS=${LAB_PORT_SMTPS:-465}
P_NOSTARTTLS=${LAB_PORT_SMTP_NOSTARTTLS:-2525}
P_BADCERT=${LAB_PORT_SMTP_BADCERT:-4465}
P_LMTP=${LAB_PORT_LMTP:-24}
P_SASL=${LAB_PORT_SASL:-12345}
CERTS=/lab/certs

if [ -z "${LAB_LISTEN:-}" ]; then
    LAB_LISTEN=127.0.0.1
    if grep -qs '^00000000000000000000000000000001 ' /proc/net/if_inet6; then
        LAB_LISTEN="127.0.0.1 ::1"
    fi
fi
interfaces=""
protocols=ipv4
for addr in $LAB_LISTEN; do
    case $addr in
        *:*) interfaces="${interfaces:+$interfaces, }[$addr]"; protocols="ipv4, ipv6" ;;
        *)   interfaces="${interfaces:+$interfaces, }$addr" ;;
    esac
done

for f in server.pem server.key rogue.pem rogue.key; do
    [ -r "$CERTS/$f" ] || { echo "entrypoint: $CERTS/$f missing (run: python -m lab.docker certs)" >&2; exit 1; }
done
[ -r /lab/users ] || { echo "entrypoint: /lab/users missing (run: python -m lab.docker certs)" >&2; exit 1; }

# Valid recipients: every account of the passwd-file, at the lab domain.
awk -F: -v d="$DOMAIN" '!/^#/ && NF > 1 { print $1 "@" d "\tOK" }' /lab/users > /etc/postfix/lab-mailboxes

cat > /etc/postfix/main.cf <<MAIN
# Written by entrypoint.sh at container start; edits are lost.
compatibility_level = 3.6
myhostname = mail.${DOMAIN}
mydomain = ${DOMAIN}
myorigin = \$mydomain
mydestination =
inet_interfaces = ${interfaces}
inet_protocols = ${protocols}
mynetworks = 127.0.0.0/8 [::1]/128
maillog_file = /dev/stdout
smtpd_banner = \$myhostname ESMTP mailops lab
biff = no
alias_maps =
alias_database =
smtpd_peername_lookup = no
smtp_dns_support_level = disabled

# Only the lab domain is delivered (over LMTP to Dovecot); nothing leaves the machine.
relay_domains =
virtual_mailbox_domains = ${DOMAIN}
virtual_mailbox_maps = texthash:/etc/postfix/lab-mailboxes
virtual_transport = lmtp:inet:[127.0.0.1]:${P_LMTP}
local_transport = error:5.1.1 no local delivery in the lab
default_transport = error:5.7.1 the lab delivers only to ${DOMAIN}
relay_transport = error:5.7.1 the lab delivers only to ${DOMAIN}
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination

# Retry soon when LMTP was not up yet.
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 30s
bounce_queue_lifetime = 1h
maximal_queue_lifetime = 1h

# Negative tests make errors on purpose: no penalty sleeps.
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 100
smtpd_hard_error_limit = 200
smtpd_client_connection_count_limit = 200

smtpd_tls_chain_files = ${CERTS}/server.key, ${CERTS}/server.pem
smtpd_tls_security_level = may
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes

smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:${P_SASL}
smtpd_sasl_auth_enable = yes
smtpd_tls_auth_only = yes
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = noanonymous
MAIN

cat > /etc/postfix/master.cf <<MASTER
# Written by entrypoint.sh at container start; edits are lost.
# service type  private unpriv  chroot  wakeup  maxproc command + args
${P_SMTP} inet n - n - - smtpd
  -o syslog_name=postfix/smtp
${P_SUBMISSION} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
${P_SMTPS} inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
${P_NOSTARTTLS} inet n - n - - smtpd
  -o syslog_name=postfix/nostarttls
  -o smtpd_tls_security_level=none
  -o smtpd_tls_auth_only=no
${P_BADCERT} inet n - n - - smtpd
  -o syslog_name=postfix/badcert
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_chain_files=${CERTS}/rogue.key,${CERTS}/rogue.pem
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n - 0 cleanup
qmgr       unix  n - n 300 1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n - - trivial-rewrite
bounce     unix  - - n - 0 bounce
defer      unix  - - n - 0 bounce
trace      unix  - - n - 0 bounce
verify     unix  - - n - 1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n - - proxymap
proxywrite unix  - - n - 1 proxymap
smtp       unix  - - n - - smtp
relay      unix  - - n - - smtp
  -o syslog_name=postfix/\$service_name
showq      unix  n - n - - showq
error      unix  - - n - - error
retry      unix  - - n - - error
discard    unix  - - n - - discard
local      unix  - n n - - local
virtual    unix  - n n - - virtual
lmtp       unix  - - n - - lmtp
anvil      unix  - - n - 1 anvil
scache     unix  - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
MASTER

# A container restarted after a hard stop keeps the old pid file.
rm -f /var/spool/postfix/pid/master.pid
echo "entrypoint: postfix for ${DOMAIN} on ${interfaces}: smtp ${P_SMTP} submission ${P_SUBMISSION}" \
     "smtps ${P_SMTPS} nostarttls ${P_NOSTARTTLS} badcert ${P_BADCERT}; lmtp ${P_LMTP} sasl ${P_SASL}"
exec postfix start-fg
