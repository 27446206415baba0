#!/usr/bin/env bash
# The outside provider: configure a second Postfix and unbound from LAB_* variables and
# run both in the foreground; stop both when one ends or on SIGTERM/SIGINT.
#
#   Postfix (mx.outside.test) on LAB_OUTSIDE_ADDRESS:LAB_PORT_OUTSIDE_SMTP only, the MX of
#     outside.test  <user>@outside.test is forwarded back to <user>@LAB_DOMAIN for every
#                   lab account (virtual alias); other users are refused at RCPT (550)
#     bounce.test   every RCPT and DATA accepted, then bounced: error transport, 5.1.1
#                   "user unknown in the lab's bounce domain"; the DSN goes back to the
#                   envelope sender
#   It sends from LAB_OUTSIDE_ADDRESS, to LAB_DOMAIN only (MX lookup, port LAB_PORT_SMTP);
#   every other destination is an error transport.
#
#   unbound on LAB_RESOLVER:53 (udp and tcp): the lab's zones only (LAB_DOMAIN, outside.test,
#   bounce.test, baddkim.test and the PTR of LAB_OUTSIDE_ADDRESS), with A, MX, SPF, DKIM
#   and DMARC records.  Every other name is REFUSED: no recursion, no forwarders, no root
#   hints; unbound sends no query anywhere.
#
#   LAB_DOMAIN (lab.test), LAB_OUTSIDE_ADDRESS (127.0.0.2), LAB_RESOLVER (127.0.0.53),
#   LAB_PORT_OUTSIDE_SMTP 25, LAB_PORT_SMTP 25 (the lab MTA's inbound port)
# /lab (mounted read-only): certs/server.{pem,key}, users, dkim/<domain>.dns.
set -euo pipefail

DOMAIN=${LAB_DOMAIN:-lab.test}
OUTSIDE=${LAB_OUTSIDE_ADDRESS:-127.0.0.2}
RESOLVER=${LAB_RESOLVER:-127.0.0.53}
P_OUTSIDE=${LAB_PORT_OUTSIDE_SMTP:-25}
P_SMTP=${LAB_PORT_SMTP:-25}
LAB_MTA=127.0.0.1
OUTSIDE_DOMAIN=outside.test
BOUNCE_DOMAIN=bounce.test
BADDKIM_DOMAIN=baddkim.test
SELECTOR=lab
CERTS=/lab/certs

for f in "$CERTS/server.pem" "$CERTS/server.key" /lab/users "/lab/dkim/$DOMAIN.dns" "/lab/dkim/$BADDKIM_DOMAIN.dns"; do
    [ -r "$f" ] || { echo "entrypoint: $f missing (run: python -m lab.docker certs)" >&2; exit 1; }
done

# -- resolver -------------------------------------------------------------------------

# A TXT value as quoted strings of at most 250 characters (a DKIM key is longer than 255).
txt() {
    local v=$1 out=""
    while [ -n "$v" ]; do out+="\"${v:0:250}\" "; v=${v:250}; done
    printf '%s' "${out% }"
}

cat > /etc/unbound/lab.conf <<UNBOUND
# Written by entrypoint.sh at container start; edits are lost.
server:
  interface: ${RESOLVER}
  port: 53
  do-ip4: yes
  do-ip6: no
  do-udp: yes
  do-tcp: yes
  access-control: 127.0.0.0/8 allow
  chroot: ""
  username: "unbound"
  directory: "/etc/unbound"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  # No validator, no trust anchor, no root priming; any query it would still send could
  # only leave from a loopback address, which the kernel does not route anywhere else.
  module-config: "iterator"
  outgoing-interface: ${RESOLVER}
  # Everything not below is REFUSED: unbound never recurses.
  local-zone: "." refuse
  # The lab domain: the lab MTA (mail.${DOMAIN}, ${LAB_MTA}).  Its SPF lets the outside
  # provider send for it too (include:${OUTSIDE_DOMAIN}): mail forwarded back by
  # ${OUTSIDE_DOMAIN} passes SPF.
  local-zone: "${DOMAIN}." static
  local-data: "${DOMAIN}. 300 IN A ${LAB_MTA}"
  local-data: "${DOMAIN}. 300 IN MX 10 mail.${DOMAIN}."
  local-data: "mail.${DOMAIN}. 300 IN A ${LAB_MTA}"
  local-data: '${DOMAIN}. 300 IN TXT "v=spf1 ip4:${LAB_MTA} ip6:::1 include:${OUTSIDE_DOMAIN} -all"'
  local-data: 'mail.${DOMAIN}. 300 IN TXT "v=spf1 ip4:${LAB_MTA} -all"'
  local-data: '${SELECTOR}._domainkey.${DOMAIN}. 300 IN TXT $(txt "$(cat "/lab/dkim/$DOMAIN.dns")")'
  local-data: '_dmarc.${DOMAIN}. 300 IN TXT "v=DMARC1; p=none; adkim=r; aspf=r"'
  # The outside provider.
  local-zone: "${OUTSIDE_DOMAIN}." static
  local-data: "${OUTSIDE_DOMAIN}. 300 IN MX 10 mx.${OUTSIDE_DOMAIN}."
  local-data: "mx.${OUTSIDE_DOMAIN}. 300 IN A ${OUTSIDE}"
  local-data: '${OUTSIDE_DOMAIN}. 300 IN TXT "v=spf1 ip4:${OUTSIDE} -all"'
  local-data: 'mx.${OUTSIDE_DOMAIN}. 300 IN TXT "v=spf1 ip4:${OUTSIDE} -all"'
  local-data: '_dmarc.${OUTSIDE_DOMAIN}. 300 IN TXT "v=DMARC1; p=none"'
  # The bouncing domain, hosted by the outside provider; it sends nothing.
  local-zone: "${BOUNCE_DOMAIN}." static
  local-data: "${BOUNCE_DOMAIN}. 300 IN MX 10 mx.${OUTSIDE_DOMAIN}."
  local-data: '${BOUNCE_DOMAIN}. 300 IN TXT "v=spf1 -all"'
  local-data: '_dmarc.${BOUNCE_DOMAIN}. 300 IN TXT "v=DMARC1; p=none"'
  # The failing-DKIM sender domain: the key published here is not the one the lab MTA
  # signs with; SPF allows the lab MTA only (~all), so via the outside provider: softfail.
  local-zone: "${BADDKIM_DOMAIN}." static
  local-data: '${BADDKIM_DOMAIN}. 300 IN TXT "v=spf1 ip4:${LAB_MTA} ~all"'
  local-data: '${SELECTOR}._domainkey.${BADDKIM_DOMAIN}. 300 IN TXT $(txt "$(cat "/lab/dkim/$BADDKIM_DOMAIN.dns")")'
  local-data: '_dmarc.${BADDKIM_DOMAIN}. 300 IN TXT "v=DMARC1; p=none"'
  # Reverse names of the MTAs (Received: lines and Postfix's client name check).
  local-zone: "127.in-addr.arpa." static
  local-data-ptr: "${LAB_MTA} localhost"
  local-data-ptr: "${OUTSIDE} mx.${OUTSIDE_DOMAIN}"
remote-control:
  control-enable: no
UNBOUND
unbound-checkconf /etc/unbound/lab.conf >/dev/null

# This container's own lookups (Postfix's MX lookups) go to the lab resolver only.
printf 'nameserver %s\noptions timeout:2 attempts:2\n' "$RESOLVER" > /etc/resolv.conf
mkdir -p /var/spool/postfix/etc
cp /etc/resolv.conf /var/spool/postfix/etc/resolv.conf

# -- Postfix --------------------------------------------------------------------------

# <user>@outside.test -> <user>@lab domain, for every account of the passwd-file.
awk -F: -v o="$OUTSIDE_DOMAIN" -v d="$DOMAIN" '!/^#/ && NF > 1 { print $1 "@" o "\t" $1 "@" d }' \
    /lab/users > /etc/postfix/outside-forward
# Postfix accepts in inet_interfaces only addresses an interface has (${OUTSIDE} is not one:
# the smtpd below binds it by name in master.cf), and its SMTP client refuses to send to
# port 25 of an address in inet_interfaces ("mail loops back to myself").  So
# inet_interfaces is ::1, where nothing of this Postfix listens, and 127.0.0.1 (the lab
# MTA) is not "myself".  Without ::1 on the host the outside MTA takes all addresses as
# its own, and sends back to the lab MTA's no-STARTTLS port instead (not port 25: no
# loop check there); the inbound checks are the same on both ports.
if grep -qs '^00000000000000000000000000000001 ' /proc/net/if_inet6; then
    self_interfaces="[::1]"; self_protocols="ipv4, ipv6"; lab_nexthop="smtp:${DOMAIN}:${P_SMTP}"
else
    self_interfaces="all"; self_protocols="ipv4"
    lab_nexthop="smtp:${DOMAIN}:${LAB_PORT_SMTP_NOSTARTTLS:-2525}"
    echo "entrypoint: no ::1 here: mail back to ${DOMAIN} goes to its port ${LAB_PORT_SMTP_NOSTARTTLS:-2525}" >&2
fi
# bounce.test goes to the error transport after the mail is accepted.  smtpd refuses a
# recipient whose transport is "error" at RCPT, unless the address matches a canonical or
# virtual alias map: an identity canonical map (envelope only) lets every one in.
# shellcheck disable=SC2016  # ${1} is the map's own back-reference, written as it is
printf '/^(.+@%s)$/\t${1}\n' "${BOUNCE_DOMAIN//./\\.}" > /etc/postfix/outside-bounce-accept
cat > /etc/postfix/outside-transport <<TRANSPORT
${BOUNCE_DOMAIN}	error:5.1.1 user unknown in the lab's bounce domain
${DOMAIN}	${lab_nexthop}
TRANSPORT

cat > /etc/postfix/main.cf <<MAIN
# Written by entrypoint.sh at container start; edits are lost.
compatibility_level = 3.6
myhostname = mx.${OUTSIDE_DOMAIN}
mydomain = ${OUTSIDE_DOMAIN}
myorigin = \$myhostname
mydestination =
inet_interfaces = ${self_interfaces}
inet_protocols = ${self_protocols}
smtp_address_preference = ipv4
smtp_bind_address = ${OUTSIDE}
smtp_bind_address6 = ::1
mynetworks = ${OUTSIDE}/32
maillog_file = /dev/stdout
smtpd_banner = \$myhostname ESMTP outside provider (mailops lab)
biff = no
alias_maps =
alias_database =

# Mail for ${OUTSIDE_DOMAIN} goes back to ${DOMAIN}; ${BOUNCE_DOMAIN} is accepted and bounced;
# ${DOMAIN} is reached by its MX (the lab resolver: mail.${DOMAIN}, ${LAB_MTA}) on port ${P_SMTP}.
# Every other destination is an error transport: nothing leaves the machine.
virtual_alias_domains = ${OUTSIDE_DOMAIN}
virtual_alias_maps = texthash:/etc/postfix/outside-forward
relay_domains = ${BOUNCE_DOMAIN}
recipient_canonical_maps = regexp:/etc/postfix/outside-bounce-accept
recipient_canonical_classes = envelope_recipient
transport_maps = texthash:/etc/postfix/outside-transport
local_transport = error:5.1.1 no local delivery at the outside provider
default_transport = error:5.7.1 the outside provider delivers only to ${DOMAIN}
relay_transport = error:5.7.1 the outside provider delivers only to ${DOMAIN}
smtpd_relay_restrictions = reject_unauth_destination
smtp_dns_support_level = enabled
smtpd_peername_lookup = yes

queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 30s
bounce_queue_lifetime = 1h
maximal_queue_lifetime = 1h
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 100
smtpd_hard_error_limit = 200
smtpd_client_connection_count_limit = 200

smtpd_tls_chain_files = ${CERTS}/server.key, ${CERTS}/server.pem
smtpd_tls_security_level = may
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
smtp_tls_security_level = may
smtp_tls_loglevel = 1
MAIN

cat > /etc/postfix/master.cf <<MASTER
# Written by entrypoint.sh at container start; edits are lost.
# service type  private unpriv  chroot  wakeup  maxproc command + args
${OUTSIDE}:${P_OUTSIDE} inet n - n - - smtpd
  -o syslog_name=outside/smtp
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
  -o syslog_name=outside/smtp-out
relay      unix  - - n - - smtp
showq      unix  n - n - - showq
error      unix  - - n - - error
  -o syslog_name=outside/error
retry      unix  - - n - - error
discard    unix  - - n - - discard
local      unix  - n n - - local
virtual    unix  - n n - - virtual
anvil      unix  - - n - 1 anvil
scache     unix  - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
MASTER

rm -f /var/spool/postfix/pid/master.pid
echo "entrypoint: outside provider mx.${OUTSIDE_DOMAIN} on ${OUTSIDE}:${P_OUTSIDE}" \
     "(${OUTSIDE_DOMAIN} -> ${DOMAIN}, ${BOUNCE_DOMAIN} bounces); resolver on ${RESOLVER}:53"

pids=()
unbound -d -p -c /etc/unbound/lab.conf &
pids+=($!)
postfix start-fg &
pids+=($!)
stop() { postfix stop >/dev/null 2>&1 || true; kill -TERM "${pids[@]}" 2>/dev/null || true; }
trap stop TERM INT
status=0
wait -n "${pids[@]}" || status=$?
stop
wait || true
exit "$status"
