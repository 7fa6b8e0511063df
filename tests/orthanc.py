"""A real Orthanc with the DICOMweb plugin, for the tests that must prove interoperability
with an archive we did not write.

Each call starts its own /usr/sbin/Orthanc on free HTTP and DICOM ports, with a generated
configuration and its storage under ``tmp_dir``: nothing shared with a system Orthanc, no
authentication, no plugin but DICOMweb.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.servers import free_port, wait_until

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
INSTALL_HINT = "apt-get install orthanc orthanc-dicomweb"


def orthanc_available() -> bool:
    """True when both the server binary and the DICOMweb plugin are installed."""
    return ORTHANC.is_file() and DICOMWEB_PLUGIN.is_file()


@dataclass
class Orthanc:
    url: str
    process: subprocess.Popen
    log: Path

    @property
    def dicomweb_url(self) -> str:
        return self.url + "/dicom-web"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _config(tmp_dir: Path, http_port: int, dicom_port: int) -> dict:
    return {
        "Name": f"AIW-TEST-{http_port}",
        "StorageDirectory": str(tmp_dir / "storage"),
        "IndexDirectory": str(tmp_dir / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "AIWTEST",
        "RemoteAccessAllowed": True,
        "AuthenticationEnabled": False,
        "HttpServerThreads": 4,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_orthanc(tmp_dir: Path, *, extra_config: dict | None = None) -> Orthanc:
    """Start Orthanc and wait until ``/system`` answers; on failure the log's tail is in
    the error, because Orthanc explains a bad configuration only there. ``extra_config``
    adds or overrides configuration keys (e.g. ``{"StableAge": 1}``: a study is stable one
    second after its last instance instead of sixty)."""
    if not orthanc_available():
        raise RuntimeError(f"Orthanc with the DICOMweb plugin is not installed ({INSTALL_HINT})")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    while dicom_port == http_port:
        dicom_port = free_port()
    config = tmp_dir / "orthanc.json"
    config.write_text(json.dumps({**_config(tmp_dir, http_port, dicom_port), **(extra_config or {})}, indent=2))
    log = tmp_dir / "orthanc.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(ORTHANC), str(config)], cwd=tmp_dir, stdout=out, stderr=subprocess.STDOUT)
    server = Orthanc(f"http://127.0.0.1:{http_port}", proc, log)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {proc.returncode}")
        return httpx.get(f"{server.url}/system", timeout=1).status_code == 200

    try:
        wait_until(up, timeout=30, what=f"Orthanc :{http_port}")
    except (TimeoutError, RuntimeError) as exc:
        server.stop()
        raise RuntimeError(f"{exc}\n--- {log} (tail) ---\n{_tail(log)}") from None
    return server

