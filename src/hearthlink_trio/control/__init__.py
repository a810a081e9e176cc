"""The control API: its routes, its server on the Unix socket, its client."""
