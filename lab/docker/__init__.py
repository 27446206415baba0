"""The Docker mail lab: real Postfix and Dovecot in two containers on loopback.

    python -m lab.docker up | down | status | logs | describe --json | certs

See lab/docker/cli.py for the commands and lab/docker/config.py for the
ports and their LAB_* environment overrides.
"""

from .config import DEFAULT_PORTS, LabConfig
from .lab import current_config, describe, down, status, up

__all__ = ["DEFAULT_PORTS", "LabConfig", "current_config", "describe", "down", "status", "up"]
