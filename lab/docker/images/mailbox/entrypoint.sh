#!/usr/bin/env bash
# Configure Dovecot from LAB_* variables and run it in the foreground
# (`dovecot -F`), logging to the container's output.
#
# Three Dovecot instances, because STLS/STARTTLS and the certificate are not
# per-port settings in Dovecot 2.3:
#   dovecot          POP3 (STLS) + POP3S, IMAP (STARTTLS) + IMAPS, LMTP with
#                    Sieve, SASL auth
#   dovecot-nostls   POP3 and IMAP with ssl=no: no STLS in CAPA, no STARTTLS in
#                    CAPABILITY (negative cases)
#   dovecot-badcert  POP3S and IMAPS with a certificate from a rogue CA (negative
#                    cases)
# All share the accounts (/lab/users), the Maildirs (/var/vmail/<user>/Maildir)
# and the folders: INBOX, Junk (\Junk), Trash (\Trash), Sent (\Sent), listed
# and subscribed for every account (Dovecot creates them when first used).  LMTP
# runs the global Sieve script lab-junk.sieve: a mail with "X-Lab-Junk: yes" or
# "[lab-junk]" in its Subject is filed into Junk, all other mail into INBOX.
#
# OAuth 2.0: every instance offers XOAUTH2 and OAUTHBEARER, served by an oauth2
# passdb that validates the lab's HS256 JWTs locally (the key from
# /lab/oauth/keys/default/HS256/default, copied for the auth process; issuer
# mailops-lab, scope mail, sub = the login name); the passwd-file passdb serves
# every other mechanism.  The token endpoint (client credentials grant) is
# /lab/oauth/oauth.py (lab/embedded/oauth.py) run by python3 as user labtoken,
# HTTPS with the lab's server certificate on each LAB_LISTEN address, port
# LAB_PORT_OAUTH; the clients are /lab/oauth/clients.json.
#
#   LAB_DOMAIN (lab.test), LAB_LISTEN (127.0.0.1 [+ ::1 if present]),
#   LAB_PORT_POP3 110, LAB_PORT_POP3S 995, LAB_PORT_POP3_NOSTLS 1110,
#   LAB_PORT_POP3_BADCERT 1995, LAB_PORT_IMAP 143, LAB_PORT_IMAPS 993,
#   LAB_PORT_IMAP_NOSTARTTLS 1143, LAB_PORT_IMAP_BADCERT 1993,
#   LAB_PORT_LMTP 24, LAB_PORT_SASL 12345, LAB_PORT_OAUTH 9443
set -euo pipefail

DOMAIN=${LAB_DOMAIN:-lab.test}
P_POP3=${LAB_PORT_POP3:-110}
P_POP3S=${LAB_PORT_POP3S:-995}
P_POP3_NOSTLS=${LAB_PORT_POP3_NOSTLS:-1110}
P_POP3_BADCERT=${LAB_PORT_POP3_BADCERT:-1995}
P_IMAP=${LAB_PORT_IMAP:-143}
P_IMAPS=${LAB_PORT_IMAPS:-993}
P_IMAP_NOSTARTTLS=${LAB_PORT_IMAP_NOSTARTTLS:-1143}
P_IMAP_BADCERT=${LAB_PORT_IMAP_BADCERT:-1993}
P_LMTP=${LAB_PORT_LMTP:-24}
P_SASL=${LAB_PORT_SASL:-12345}
P_OAUTH=${LAB_PORT_OAUTH:-9443}
CERTS=/lab/certs
OAUTH=/lab/oauth
OAUTH_KEY=default/HS256/default   # <azp>/<alg>/<kid>: what Dovecot 2.3 looks the key up as
SIEVE=/etc/dovecot/sieve/lab-junk.sieve

if [ -z "${LAB_LISTEN:-}" ]; then
    LAB_LISTEN=127.0.0.1
    if grep -qs '^00000000000000000000000000000001 ' /proc/net/if_inet6; then
        LAB_LISTEN="127.0.0.1 ::1"
    fi
fi
read -r -a addrs <<<"$LAB_LISTEN"
listen=${addrs[*]}
listen=${listen// /, }

for f in server.pem server.key rogue.pem rogue.key; do
    [ -r "$CERTS/$f" ] || { echo "entrypoint: $CERTS/$f missing (run: python -m lab.docker certs)" >&2; exit 1; }
done
for f in /lab/users "$OAUTH/keys/$OAUTH_KEY" "$OAUTH/clients.json" "$OAUTH/oauth.py"; do
    [ -r "$f" ] || { echo "entrypoint: $f missing (run: python -m lab.docker certs)" >&2; exit 1; }
done

conf=/etc/dovecot/lab
mkdir -p "$conf"

# The auth process runs as dovecot and reads the key through an fs dict: its own copy.
keys=/etc/dovecot/oauth-keys
rm -rf "$keys"
install -d -o root -g dovecot -m 0750 "$keys" "$keys/${OAUTH_KEY%/*}" "$keys/${OAUTH_KEY%%/*}"
install -o root -g dovecot -m 0640 "$OAUTH/keys/$OAUTH_KEY" "$keys/$OAUTH_KEY"

# Local validation of the lab's JWTs (HS256, kid "default", no azp).  Dovecot looks the
# key up as shared/<azp or "default">/<alg>/<kid> in the dict: the file
# ${keys}/${OAUTH_KEY} (base64).  It checks typ JWT, exp/nbf/iat, iss (issuers), the
# scope claim (scope), the signature, and sub (username_attribute) against the login
# name after username_format (%Lu).  The aud claim: Debian's 2.3.19.1 (+deb12u7, fixes
# backported from 2.4.5) has the passdb setting "audience" and no longer falls back to
# aud for a token without scope; an upstream 2.3.19 has neither and ignores aud.
audience=""
if grep -qaF "Token audience does not include" /usr/lib/dovecot/auth; then
    audience="audience = mail"
fi
cat > "$conf/oauth2.conf.ext" <<OAUTH2
# Written by entrypoint.sh at container start; edits are lost.
introspection_mode = local
local_validation_key_dict = fs:posix:prefix=${keys}/
username_attribute = sub
scope = mail
issuers = mailops-lab
${audience:-# (this Dovecot has no audience setting: aud is not checked)}
# In the JSON error challenge (RFC 7628 3.2.2): the token endpoint's discovery document.
openid_configuration_url = https://127.0.0.1:${P_OAUTH}/.well-known/openid-configuration
OAUTH2

cat > "$conf/common.conf" <<COMMON
# Written by entrypoint.sh at container start; edits are lost.
listen = ${listen}
hostname = mail.${DOMAIN}
log_path = /dev/stderr
login_greeting = Dovecot (mailops lab) ready.
disable_plaintext_auth = no
# APOP and CRAM-MD5 need the password itself: passwd-file with {PLAIN}.
auth_mechanisms = plain login cram-md5 apop xoauth2 oauthbearer
auth_username_format = %Ln
auth_failure_delay = 0
auth_verbose = yes
# Passwords for the password mechanisms ("none": lookups without one), bearer
# tokens for the OAuth ones: neither passdb is tried for the other's mechanisms.
passdb {
  driver = passwd-file
  args = scheme=PLAIN /lab/users
  mechanisms = plain login cram-md5 apop none
}
passdb {
  driver = oauth2
  args = ${conf}/oauth2.conf.ext
  mechanisms = xoauth2 oauthbearer
}
userdb {
  driver = static
  args = uid=vmail gid=vmail home=/var/vmail/%Ln
}
mail_location = maildir:~/Maildir
mail_uid = vmail
mail_gid = vmail
first_valid_uid = 5000
pop3_uidl_format = %08Xu%08Xv
ssl_min_protocol = TLSv1.2
protocol pop3 {
  mail_max_userip_connections = 500
}
# The special-use folders every account has (RFC 6154, LIST shows the attribute);
# auto = subscribe lists and subscribes them and creates them when first used.
# Sieve files into Junk (fileinto :create).
namespace inbox {
  inbox = yes
  mailbox Junk {
    special_use = \\Junk
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
}
# IDLE is on (Dovecot's default); imap_idle_notify_interval keeps its default of
# 2 mins: how often an idling client gets "* OK Still here".
protocol imap {
  mail_max_userip_connections = 500
}
service pop3-login {
  process_min_avail = 1
}
# No growing delay after failed logins from one IP (every client is 127.0.0.1
# here, and negative tests fail logins on purpose): no auth penalty socket.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
COMMON

cat > "$conf/main.conf" <<MAINCONF
!include ${conf}/common.conf
instance_name = dovecot
base_dir = /run/dovecot/
protocols = pop3 imap lmtp
ssl = yes
ssl_cert = <${CERTS}/server.pem
ssl_key = <${CERTS}/server.key
service pop3-login {
  inet_listener pop3 {
    port = ${P_POP3}
  }
  inet_listener pop3s {
    port = ${P_POP3S}
    ssl = yes
  }
}
service imap-login {
  inet_listener imap {
    port = ${P_IMAP}
  }
  inet_listener imaps {
    port = ${P_IMAPS}
    ssl = yes
  }
}
service lmtp {
  inet_listener lmtp {
    port = ${P_LMTP}
  }
}
# Postfix asks this listener for SMTP AUTH (smtpd_sasl_path = inet:127.0.0.1:${P_SASL}).
service auth {
  inet_listener sasl {
    port = ${P_SASL}
  }
}
# Pigeonhole Sieve in LMTP: the global script (compiled below) runs before any
# user script; no user has one, so what it does not file goes to INBOX.
protocol lmtp {
  postmaster_address = postmaster@${DOMAIN}
  mail_plugins = \$mail_plugins sieve
}
plugin {
  sieve_before = ${SIEVE}
}
MAINCONF

cat > "$conf/nostls.conf" <<NOSTLS
!include ${conf}/common.conf
instance_name = dovecot-nostls
base_dir = /run/dovecot-nostls/
state_dir = /var/lib/dovecot-nostls
protocols = pop3 imap
ssl = no
service pop3-login {
  inet_listener pop3 {
    port = ${P_POP3_NOSTLS}
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap-login {
  inet_listener imap {
    port = ${P_IMAP_NOSTARTTLS}
  }
  inet_listener imaps {
    port = 0
  }
}
NOSTLS

cat > "$conf/badcert.conf" <<BADCERT
!include ${conf}/common.conf
instance_name = dovecot-badcert
base_dir = /run/dovecot-badcert/
state_dir = /var/lib/dovecot-badcert
protocols = pop3 imap
ssl = yes
ssl_cert = <${CERTS}/rogue.pem
ssl_key = <${CERTS}/rogue.key
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    port = ${P_POP3_BADCERT}
    ssl = yes
  }
}
service imap-login {
  inet_listener imap {
    port = 0
  }
  inet_listener imaps {
    port = ${P_IMAP_BADCERT}
    ssl = yes
  }
}
BADCERT

mkdir -p /var/lib/dovecot-nostls /var/lib/dovecot-badcert
# LMTP runs as vmail and cannot write next to the script: compile it here, once.
sievec -c "$conf/main.conf" "$SIEVE"
echo "entrypoint: dovecot for ${DOMAIN} on ${listen}: pop3 ${P_POP3} pop3s ${P_POP3S}" \
     "pop3_nostls ${P_POP3_NOSTLS} pop3_badcert ${P_POP3_BADCERT} imap ${P_IMAP} imaps ${P_IMAPS}" \
     "imap_nostarttls ${P_IMAP_NOSTARTTLS} imap_badcert ${P_IMAP_BADCERT} lmtp ${P_LMTP} sasl ${P_SASL}" \
     "oauth https ${P_OAUTH}"

# The token endpoint's own copies of what it reads (the originals are root's, 0600).
run=/run/lab-oauth
rm -rf "$run"
install -d -o labtoken -g labtoken -m 0700 "$run"
install -o labtoken -g labtoken -m 0600 "$OAUTH/keys/$OAUTH_KEY" "$run/key"
install -o labtoken -g labtoken -m 0600 "$OAUTH/clients.json" "$run/clients.json"
install -o labtoken -g labtoken -m 0600 "$CERTS/server.key" "$run/server.key"
install -o labtoken -g labtoken -m 0644 "$CERTS/server.pem" "$run/server.pem"

# Run the three masters and the token endpoint (one per listen address); stop all
# when one ends or on SIGTERM/SIGINT.
pids=()
for name in nostls badcert main; do
    dovecot -F -c "$conf/$name.conf" &
    pids+=($!)
done
for addr in "${addrs[@]}"; do
    PYTHONDONTWRITEBYTECODE=1 setpriv --reuid=labtoken --regid=labtoken --init-groups \
        python3 -I "$OAUTH/oauth.py" serve --key-file "$run/key" \
        --clients-file "$run/clients.json" --host "$addr" --port "$P_OAUTH" \
        --tls-cert "$run/server.pem" --tls-key "$run/server.key" &
    pids+=($!)
done
stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; }
trap stop TERM INT
status=0
wait -n "${pids[@]}" || status=$?
stop
wait || true
exit "$status"
