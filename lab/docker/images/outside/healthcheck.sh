#!/usr/bin/env bash
# Healthy when the outside Postfix and unbound run and listen where they should.
# Checked with ss rather than by connecting: no log line per check.
pgrep -x master >/dev/null || { echo "postfix master not running"; exit 1; }
pgrep -x unbound >/dev/null || { echo "unbound not running"; exit 1; }
tcp=$(ss -Hltn 2>/dev/null | awk '{print $4}')
udp=$(ss -Hlun 2>/dev/null | awk '{print $4}')
addr=${LAB_OUTSIDE_ADDRESS:-127.0.0.2}
p=${LAB_PORT_OUTSIDE_SMTP:-25}
grep -qx "$addr:$p" <<<"$tcp" || { echo "outside smtp $addr:$p not listening"; exit 1; }
resolver=${LAB_RESOLVER:-127.0.0.53}
grep -qx "$resolver:53" <<<"$udp" || { echo "resolver $resolver:53/udp not listening"; exit 1; }
grep -qx "$resolver:53" <<<"$tcp" || { echo "resolver $resolver:53/tcp not listening"; exit 1; }
exit 0
