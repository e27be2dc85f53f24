"""Platform connectors: a raw request in, normalised drafts out. Pure: no I/O."""
