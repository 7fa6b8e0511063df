"""Task Performer runtime (agent, rq workers, volume I/O, result encoders, models).

Built by the Task Performer issue; imports only :mod:`upsrs`.
"""
