"""What the requester's test modules share: small studies, the reference procedure's code,
a CLI runner. (Their Orthanc and Task Manager are the conftest fixtures ``stable_orthanc``
and ``module_server_url``.)"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import tests.orthanc as torthanc

SHAPE = dict(shape=(16, 16, 8), spacing=(2.0, 2.0, 4.0), n_lesions=1)
CODE = ("AIW-FLAIR-LES", "99AIW", "FLAIR hyperintense lesion detection")
runner = CliRunner()
needs_orthanc = pytest.mark.skipif(not torthanc.orthanc_available(), reason=torthanc.INSTALL_HINT)

