"""aiw: composes the Task Manager, performers, requester and watcher into one command."""
