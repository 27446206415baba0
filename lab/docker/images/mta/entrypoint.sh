#!/usr/bin/env bash
# Configure Postfix, OpenDKIM, OpenDMARC and policyd-spf from LAB_* variables; start the
# milters, then run Postfix in the foreground (`postfix start-fg`, the container's main
# process), everything logging to the container's stdout.
#
#   LAB_DOMAIN                 virtual mailbox domain (default lab.test)
#   LAB_LISTEN                 addresses to listen on (default: 127.0.0.1, plus ::1 if present)
#   LAB_PORT_SMTP              25    inbound: STARTTLS offered, not required; no relaying
#                                    without AUTH; SPF, DKIM and DMARC verdicts
#   LAB_PORT_SUBMISSION        587   STARTTLS and AUTH required; DKIM-signed
#   LAB_PORT_SMTPS             465   implicit TLS, AUTH; DKIM-signed
#   LAB_PORT_SMTP_NOSTARTTLS   2525  no STARTTLS (negative case)
#   LAB_PORT_SMTP_BADCERT      4465  implicit TLS, certificate from a rogue CA
#   LAB_PORT_SMTP_OPENRELAY    2526  relays for loopback clients without AUTH (negative case)
#   LAB_PORT_LMTP              24    Dovecot LMTP (delivery target)
#   LAB_PORT_SASL              12345 Dovecot auth (SMTP AUTH: PLAIN, LOGIN, CRAM-MD5, XOAUTH2,
#                                    OAUTHBEARER; whatever Dovecot offers)
#   LAB_OUTSIDE_ADDRESS        127.0.0.2  not used here: outside.test and bounce.test are
#   LAB_PORT_OUTSIDE_SMTP      25         reached by their MX (the resolver) on this port
#   LAB_RESOLVER               127.0.0.53 the lab's resolver: this container's only one
#
# Mail goes: <user>@LAB_DOMAIN -> LMTP; outside.test and bounce.test -> the outside
# provider (MX lookup, port LAB_PORT_OUTSIDE_SMTP), for authenticated clients (and the
# open-relay port) only; anything else -> error transport.  The SMTP client binds to
# 127.0.0.1 / ::1, from which the kernel routes nowhere but loopback.
#
# /lab (mounted read-only): certs/server.{pem,key}, certs/rogue.{pem,key}, users,
# dkim/<domain>.key.
set -euo pipefail

DOMAIN=${LAB_DOMAIN:-lab.test}
P_SMTP=${LAB_PORT_SMTP:-25}
P_SUBMISSION=${LAB_PORT_SUBMISSION:-587}
P_SMTPS=${LAB_PORT_SMTPS:-465}
P_NOSTARTTLS=${LAB_PORT_SMTP_NOSTARTTLS:-2525}
P_BADCERT=${LAB_PORT_SMTP_BADCERT:-4465}
P_OPENRELAY=${LAB_PORT_SMTP_OPENRELAY:-2526}
P_LMTP=${LAB_PORT_LMTP:-24}
P_SASL=${LAB_PORT_SASL:-12345}
P_OUTSIDE=${LAB_PORT_OUTSIDE_SMTP:-25}
RESOLVER=${LAB_RESOLVER:-127.0.0.53}
OUTSIDE_DOMAIN=outside.test
BOUNCE_DOMAIN=bounce.test
BADDKIM_DOMAIN=baddkim.test
SELECTOR=lab
AUTHSERV_ID=mail.${DOMAIN}
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
for f in /lab/users "/lab/dkim/$DOMAIN.key" "/lab/dkim/$BADDKIM_DOMAIN.key"; do
    [ -r "$f" ] || { echo "entrypoint: $f missing (run: python -m lab.docker certs)" >&2; exit 1; }
done

# The syslog socket OpenDKIM, OpenDMARC and policyd-spf log to, copied to our stdout.
python3 /usr/local/bin/lab-syslog &
for _i in $(seq 50); do [ -S /dev/log ] && break; sleep 0.1; done

# Every lookup of this container (Postfix's MX lookups, policyd-spf, OpenDMARC) goes to the
# lab resolver, and to nothing else.
printf 'nameserver %s\noptions timeout:2 attempts:2\n' "$RESOLVER" > /etc/resolv.conf
mkdir -p /var/spool/postfix/etc
cp /etc/resolv.conf /var/spool/postfix/etc/resolv.conf

# Valid recipients: every account of the passwd-file, at the lab domain.
awk -F: -v d="$DOMAIN" '!/^#/ && NF > 1 { print $1 "@" d "\tOK" }' /lab/users > /etc/postfix/lab-mailboxes
# Who may send as whom on the submission ports: each account owns its own address.  An
# address not listed (probe@${DOMAIN}, rt01@${BADDKIM_DOMAIN}) stays free for any login.
awk -F: -v d="$DOMAIN" '!/^#/ && NF > 1 { print $1 "@" d "\t" $1 }' /lab/users > /etc/postfix/lab-senders
cat > /etc/postfix/lab-transport <<TRANSPORT
${OUTSIDE_DOMAIN}	smtp:${OUTSIDE_DOMAIN}:${P_OUTSIDE}
${BOUNCE_DOMAIN}	smtp:${BOUNCE_DOMAIN}:${P_OUTSIDE}
${BADDKIM_DOMAIN}	error:5.1.2 ${BADDKIM_DOMAIN} only sends in the lab
TRANSPORT

# -- OpenDKIM: one signer (submission ports), one verifier (inbound) ------------------
install -d -o opendkim -g opendkim -m 0750 /etc/opendkim/keys
install -d -o opendkim -g opendkim -m 0755 /run/opendkim
for d in "$DOMAIN" "$BADDKIM_DOMAIN"; do
    install -o opendkim -g opendkim -m 0600 "/lab/dkim/$d.key" "/etc/opendkim/keys/$d.key"
done
cat > /etc/opendkim/key.table <<KEYS
${DOMAIN}	${DOMAIN}:${SELECTOR}:/etc/opendkim/keys/${DOMAIN}.key
${BADDKIM_DOMAIN}	${BADDKIM_DOMAIN}:${SELECTOR}:/etc/opendkim/keys/${BADDKIM_DOMAIN}.key
KEYS
cat > /etc/opendkim/signing.table <<SIGNING
*@${DOMAIN}	${DOMAIN}
*@${BADDKIM_DOMAIN}	${BADDKIM_DOMAIN}
SIGNING
printf '127.0.0.0/8\n::1\n' > /etc/opendkim/internal.hosts
printf '# empty: no client is "internal", the verifier checks every message\n' > /etc/opendkim/no-internal.hosts
# OpenDKIM resolves with libunbound, which recurses from the root servers unless told
# otherwise: forward everything to the lab resolver, from a loopback address.  libunbound
# answers NXDOMAIN for all of .test itself (RFC 6761) unless that default zone is off.
cat > /etc/opendkim/unbound.conf <<UB
server:
  module-config: "iterator"
  do-not-query-localhost: no
  do-ip6: no
  outgoing-interface: 127.0.0.1
  local-zone: "test." nodefault
forward-zone:
  name: "."
  forward-addr: ${RESOLVER}
UB
common_dkim="UserID opendkim
UMask 0002
Syslog yes
SyslogSuccess yes
LogWhy yes
Canonicalization relaxed/relaxed"
# The signer looks nothing up: without a resolver configuration it never loads one per message
# (with one, OpenDKIM 2.11 failed "can't set VBR resolver configuration" and died under the
# benchmark's 2,000 submissions a minute).
cat > /etc/opendkim/sign.conf <<SIGN
${common_dkim}
Mode s
Socket local:/run/opendkim/sign.sock
PidFile /run/opendkim/sign.pid
KeyTable /etc/opendkim/key.table
SigningTable refile:/etc/opendkim/signing.table
InternalHosts /etc/opendkim/internal.hosts
OversignHeaders From
SIGN
cat > /etc/opendkim/verify.conf <<VERIFY
${common_dkim}
Nameservers ${RESOLVER}
ResolverConfiguration /etc/opendkim/unbound.conf
Mode v
Socket local:/run/opendkim/verify.sock
PidFile /run/opendkim/verify.pid
AuthservID ${AUTHSERV_ID}
AlwaysAddARHeader yes
InternalHosts /etc/opendkim/no-internal.hosts
VERIFY

# -- OpenDMARC (inbound): reads the DKIM and SPF verdicts of ${AUTHSERV_ID} ------------
install -d -o opendmarc -g opendmarc -m 0755 /run/opendmarc
mkdir -p /etc/opendmarc
printf '# empty: no client is skipped (the default would skip 127.0.0.1)\n' > /etc/opendmarc/no-ignore.hosts
cat > /etc/opendmarc/lab.conf <<DMARC
UserID opendmarc
UMask 0002
Syslog true
Socket local:/run/opendmarc/opendmarc.sock
PidFile /run/opendmarc/opendmarc.pid
AuthservID ${AUTHSERV_ID}
TrustedAuthservIDs ${AUTHSERV_ID}
IgnoreHosts /etc/opendmarc/no-ignore.hosts
IgnoreAuthenticatedClients true
SPFSelfValidate false
SPFIgnoreResults false
RejectFailures false
FailureReports false
RequiredHeaders false
DMARC

# -- policyd-spf (inbound, at RCPT): an Authentication-Results header, never a reject ----
mkdir -p /etc/postfix-policyd-spf-python
cat > /etc/postfix-policyd-spf-python/lab.conf <<SPF
debugLevel = 1
TestOnly = 1
HELO_reject = False
Mail_From_reject = False
PermError_reject = False
TempError_Defer = False
# Its default skips SPF for 127.0.0.0/8 and ::1: every client of the lab.  An empty value
# breaks it; no client ever comes from 0.0.0.0.
skip_addresses = 0.0.0.0/32
Header_Type = AR
Authserv_Id = ${AUTHSERV_ID}
Hide_Receiver = Yes
SPF

# A container restarted after a hard stop keeps old pid files and sockets.
rm -f /run/opendkim/* /run/opendmarc/*
# The milters in the foreground, each started again should it end, so that one crash does not
# leave the lab signing or verifying nothing for the rest of its life (Postfix would accept the
# mail unsigned: milter_default_action = accept).
keep() {
    while true; do
        "$@" || true
        echo "entrypoint: $1 ended; starting it again" >&2
        sleep 1
    done
}
keep opendkim -f -x /etc/opendkim/sign.conf &
keep opendkim -f -x /etc/opendkim/verify.conf &
keep opendmarc -f -c /etc/opendmarc/lab.conf &
for _i in $(seq 100); do
    [ -S /run/opendkim/sign.sock ] && [ -S /run/opendkim/verify.sock ] \
        && [ -S /run/opendmarc/opendmarc.sock ] && break
    sleep 0.1
done

cat > /etc/postfix/main.cf <<MAIN
# Written by entrypoint.sh at container start; edits are lost.
compatibility_level = 3.6
myhostname = mail.${DOMAIN}
mydomain = ${DOMAIN}
myorigin = \$mydomain
mydestination =
inet_interfaces = ${interfaces}
inet_protocols = ${protocols}
# Relaying needs AUTH (smtpd_relay_restrictions has no permit_mynetworks); only the
# open-relay port trusts loopback clients, with its own mynetworks.
mynetworks = 127.0.0.1/32 [::1]/128
maillog_file = /dev/stdout
smtpd_banner = \$myhostname ESMTP mailops lab
biff = no
alias_maps =
alias_database =
smtpd_peername_lookup = yes
smtp_dns_support_level = enabled
smtp_bind_address = 127.0.0.1
smtp_bind_address6 = ::1
smtp_tls_security_level = may
smtp_tls_loglevel = 1

# The lab domain is delivered over LMTP to Dovecot; ${OUTSIDE_DOMAIN} and ${BOUNCE_DOMAIN}
# go to the outside provider (their MX, from the lab resolver), for authenticated
# clients only (they are not relay_domains); every other destination is an error
# transport: nothing leaves the machine.
relay_domains =
virtual_mailbox_domains = ${DOMAIN}
virtual_mailbox_maps = texthash:/etc/postfix/lab-mailboxes
virtual_transport = lmtp:inet:[127.0.0.1]:${P_LMTP}
transport_maps = texthash:/etc/postfix/lab-transport
local_transport = error:5.1.1 no local delivery in the lab
default_transport = error:5.7.1 the lab delivers only to ${DOMAIN}
relay_transport = error:5.7.1 the lab delivers only to ${DOMAIN}
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_sender_login_maps = texthash:/etc/postfix/lab-senders

# Inbound (25, and the no-STARTTLS and rogue-certificate ports): SPF at RCPT time
# (policyd-spf), then DKIM verification and DMARC (milters).  Each adds an
# Authentication-Results header with the authserv-id ${AUTHSERV_ID}; none rejects.
smtpd_recipient_restrictions = check_policy_service unix:private/policyd-spf
policyd-spf_time_limit = 3600
smtpd_milters = unix:/run/opendkim/verify.sock, unix:/run/opendmarc/opendmarc.sock
non_smtpd_milters =
milter_default_action = accept

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
# SASL through Dovecot includes XOAUTH2 and OAUTHBEARER (bearer tokens).  smtpd reads
# the AUTH command line, initial response included, with line_length_limit (default
# 2048: a longer line is chopped and Dovecot sees broken base64), and the answer to a
# challenge with smtpd_sasl_response_limit (default 12288).  A 3 KB token is a 4.3 KB
# initial response: allow the same 12288 on the command line.
line_length_limit = 12288
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
  -o smtpd_sender_restrictions=reject_known_sender_login_mismatch
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=
  -o smtpd_milters=unix:/run/opendkim/sign.sock
${P_SMTPS} inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_sender_restrictions=reject_known_sender_login_mismatch
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=
  -o smtpd_milters=unix:/run/opendkim/sign.sock
${P_NOSTARTTLS} inet n - n - - smtpd
  -o syslog_name=postfix/nostarttls
  -o smtpd_tls_security_level=none
  -o smtpd_tls_auth_only=no
${P_BADCERT} inet n - n - - smtpd
  -o syslog_name=postfix/badcert
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_chain_files=${CERTS}/rogue.key,${CERTS}/rogue.pem
${P_OPENRELAY} inet n - n - - smtpd
  -o syslog_name=postfix/openrelay
  -o smtpd_tls_security_level=none
  -o smtpd_sasl_auth_enable=no
  -o mynetworks=127.0.0.0/8,[::1]/128
  -o smtpd_relay_restrictions=permit_mynetworks,reject_unauth_destination
  -o smtpd_recipient_restrictions=
  -o smtpd_milters=
policyd-spf unix - n n - 0 spawn
  user=policyd-spf argv=/usr/bin/policyd-spf /etc/postfix-policyd-spf-python/lab.conf
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
     "smtps ${P_SMTPS} nostarttls ${P_NOSTARTTLS} badcert ${P_BADCERT} openrelay ${P_OPENRELAY};" \
     "lmtp ${P_LMTP} sasl ${P_SASL}; opendkim, opendmarc, policyd-spf as ${AUTHSERV_ID};" \
     "resolver ${RESOLVER}; ${OUTSIDE_DOMAIN}/${BOUNCE_DOMAIN} via their MX on port ${P_OUTSIDE}"
exec postfix start-fg
