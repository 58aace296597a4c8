"""Sans-I/O wire formats: bytes in, parsed values and bytes out; no sockets, no clock."""
