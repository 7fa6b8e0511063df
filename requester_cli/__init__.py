"""Task Requester: workitem builder, procedure templates, PACS triggers, CLI.

Built by the Task Requester issue; imports only :mod:`upsrs`.
"""
