"""The UPS-RS protocol, shared by every aiw actor.

This package imports none of the actor packages: the Task Manager, performers, requester
and watcher all build on it, and a third-party implementation could too.
"""
