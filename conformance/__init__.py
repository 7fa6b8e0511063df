"""Portable black-box UPS-RS conformance suite (DICOM PS3.18 Worklist Service, IHE AIW-I).

The suite talks to any UPS-RS origin server over HTTP only. It imports pytest, httpx,
hypothesis and the standard library — never the aiw packages — so that other vendors
can run it against their own Task Manager:

    AIW_CONFORMANCE_URL=http://host:port/dicom-web python -m pytest conformance -q
    python -m pytest conformance --ups-url http://host:port/dicom-web
    aiw conformance --url http://host:port/dicom-web      # calls conformance.runner.run

The URL is the service root: ``{url}/workitems`` must be the workitems resource.

Where editions of the standard (or the major implementations) disagree, the tests accept
every sanctioned outcome — typically ``{400, 409}`` for lock and state conflicts — and
still check the Warning text wherever the editions agree (see the digest's §7).
"""
