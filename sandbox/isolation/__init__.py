"""Isolation: bubblewrap, cgroups, limits and the process tree an untrusted phase runs as."""
