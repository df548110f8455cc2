"""The control socket: wire format, server, peer authorization and commands.

``protocol`` defines the newline-delimited JSON messages, ``server`` binds the
Unix socket and serves connections, ``auth`` reads peer credentials and
decides who may mutate, and ``commands`` runs each request against the daemon.
"""
