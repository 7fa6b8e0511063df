"""The Task Manager: UPS-RS origin server over Redis (Starlette + uvicorn)."""
