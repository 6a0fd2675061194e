"""gitdns: an authoritative DNS server whose source of truth is a git repository."""

__version__ = "0.1.0"
