#!/usr/bin/env bash
# Healthy when the Postfix master and the milters run and every listener is bound on
# 127.0.0.1.  Checked with ss rather than by connecting: no log line per check.
pgrep -x master >/dev/null || { echo "postfix master not running"; exit 1; }
[ "$(pgrep -c -x opendkim)" -ge 2 ] || { echo "an opendkim instance is not running"; exit 1; }
pgrep -x opendmarc >/dev/null || { echo "opendmarc not running"; exit 1; }
for s in /run/opendkim/sign.sock /run/opendkim/verify.sock /run/opendmarc/opendmarc.sock; do
    [ -S "$s" ] || { echo "milter socket $s missing"; exit 1; }
done
listening=$(ss -Hltn 2>/dev/null | awk '{print $4}')
for p in "${LAB_PORT_SMTP:-25}" "${LAB_PORT_SUBMISSION:-587}" "${LAB_PORT_SMTPS:-465}" \
         "${LAB_PORT_SMTP_NOSTARTTLS:-2525}" "${LAB_PORT_SMTP_BADCERT:-4465}" \
         "${LAB_PORT_SMTP_OPENRELAY:-2526}"; do
    grep -qx "127.0.0.1:$p" <<<"$listening" || { echo "port $p not listening"; exit 1; }
done
exit 0
