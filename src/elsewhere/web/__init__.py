"""Everything that speaks HTTP to people and CDNs, on one HTTP core: h11 (HTTP/1.1) and h2
(HTTP/2), used sans-I/O (bytes in, events out) under thin asyncio adapters; and the decoy site:
its server behaviour (nginx 1.22's, byte for byte, with a request parser of its own: decoy*.py,
nginx.py) and each server's own generated site (site*.py)."""
