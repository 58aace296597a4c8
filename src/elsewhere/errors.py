"""The exception families, one per layer (STYLE.md): a codec raises, the adapter decides what a
stranger sees, the CLI turns a person's mistake into one clear line."""


class ElsewhereError(Exception):
    """Base of every error elsewhere raises on purpose."""


class ProtocolError(ElsewhereError):
    """Bytes from a peer that do not follow the wire format (codecs raise this)."""


class AuthenticationError(ProtocolError):
    """Bytes that decrypt or authenticate under none of the keys we hold."""


class ReplayError(ProtocolError):
    """A salt, nonce or packet id that was seen before."""


class ConfigError(ElsewhereError):
    """A config file, access key or command-line value a person got wrong; the message says how
    to fix it."""


class PolicyError(ElsewhereError):
    """A destination the router or the server's policy refuses (blocked, private address)."""
