"""The Docker mail lab: real Postfix and Dovecot in two containers on loopback.

    python -m lab.docker up | down | status | logs | describe --json | certs

See lab/docker/cli.py for the commands and lab/docker/config.py for the
port table (PORTS) and the LAB_* environment overrides.
"""

from .config import DEFAULT_PORTS, PORTS, LabConfig
from .lab import current_config, describe, down, status, up

__all__ = ["DEFAULT_PORTS", "PORTS", "LabConfig", "current_config", "describe", "down", "status", "up"]
