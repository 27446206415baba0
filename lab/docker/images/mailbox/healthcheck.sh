#!/usr/bin/env bash
# Healthy when the three Dovecot instances and the token endpoint run and every
# listener is bound on 127.0.0.1.
# Checked with ss rather than by connecting: no log line per check.
[ "$(pgrep -c -x dovecot)" -ge 3 ] || { echo "a dovecot instance is not running"; exit 1; }
pgrep -u labtoken -f "oauth.py serve" >/dev/null || { echo "the token endpoint is not running"; exit 1; }
listening=$(ss -Hltn 2>/dev/null | awk '{print $4}')
for p in "${LAB_PORT_POP3:-110}" "${LAB_PORT_POP3S:-995}" "${LAB_PORT_POP3_NOSTLS:-1110}" \
         "${LAB_PORT_POP3_BADCERT:-1995}" "${LAB_PORT_IMAP:-143}" "${LAB_PORT_IMAPS:-993}" \
         "${LAB_PORT_IMAP_NOSTARTTLS:-1143}" "${LAB_PORT_IMAP_BADCERT:-1993}" \
         "${LAB_PORT_LMTP:-24}" "${LAB_PORT_SASL:-12345}" "${LAB_PORT_OAUTH:-9443}"; do
    grep -qx "127.0.0.1:$p" <<<"$listening" || { echo "port $p not listening"; exit 1; }
done
exit 0
