"""Everything that speaks HTTP to people and CDNs, on one HTTP core: h11 (HTTP/1.1) and h2
(HTTP/2), used sans-I/O (bytes in, events out) under thin asyncio adapters."""
