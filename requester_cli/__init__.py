"""Task Requester: workitem builder, procedure templates, PACS triggers, CLI.

Modules: ``builder`` (RAD-80 payloads), ``templates`` (TOML procedure templates),
``qido`` (study-scoped DICOMweb reads), ``select`` (input rules, STAT), ``request``
(plan → one Create; deterministic workitem UID per study and procedure), ``triggers``,
``watch_orthanc``, ``watch_dicomweb``, ``follow``, ``render``, ``cli`` (``aiw request``).
Imports only :mod:`upsrs` among aiw's packages.
"""
