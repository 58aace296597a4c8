"""Protocols as the control plane sees them (keys, share links, the server's inbounds): every
module here registers itself (protocols/base.py says how); a new protocol is a new file."""
