"""Watcher: global subscriber, live model, web and terminal consoles.

Built by the Watcher issue; imports only :mod:`upsrs`.
"""
