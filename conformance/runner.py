"""Programmatic entry point: run the conformance suite against one UPS-RS server.

``aiw conformance --url URL`` calls :func:`run`; other vendors can do the same from their
own tooling (``python -c "from conformance.runner import run; raise SystemExit(run(URL))"``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

SUITE_DIR = Path(__file__).resolve().parent


def run(url: str, extra_args: list[str] | None = None) -> int:
    """Run every conformance test against the service root ``url``; return pytest's exit code.

    The cache provider is disabled because the suite may be installed read-only in
    site-packages; ``extra_args`` are passed through to pytest (e.g. ``["-q", "-k", "search"]``).
    """
    args = [str(SUITE_DIR), f"--ups-url={url}", "-p", "no:cacheprovider", *(extra_args or [])]
    return int(pytest.main(args))


if __name__ == "__main__":  # python -m conformance.runner URL [pytest args…]
    import sys

    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m conformance.runner URL [pytest args…]")
    raise SystemExit(run(sys.argv[1], sys.argv[2:]))
