"""Full-device mode on Linux (`elsewhere vpn`): every program's TCP, UDP and DNS through the
tunnel by nftables and policy routing, a kill switch that outlives the process, split rules.
The kernel moves the packets; the engine's transparent inbounds see streams and datagrams."""
