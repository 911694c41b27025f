"""Which addresses openfal may connect to on a user's behalf (webhooks, image URLs,
relayed media): only public ones, unless the operator allows private ones. The
guarded transport in ``openfal.fetch`` applies this to every address it dials, so
neither redirects nor DNS can smuggle in 127.0.0.1."""

from __future__ import annotations

import ipaddress


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _public(ip.ipv4_mapped)
        # site-local is the old private range; 6to4 carries an IPv4 address it may reach
        if ip.is_site_local or (ip.sixtofour is not None and not _public(ip.sixtofour)):
            return False
    return _public(ip)


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_loopback or ip.is_private)
