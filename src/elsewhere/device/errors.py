"""Why full-device mode cannot start or stop: one line a person can act on."""

from elsewhere.errors import ConfigError


class DeviceError(ConfigError):
    """Something on this machine is in the way (permissions, nftables, another VPN)."""
