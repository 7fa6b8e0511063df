"""The optional embedded DICOMweb store (STOW-RS, WADO-RS, QIDO-RS over a directory), so
``aiw demo`` runs on a bare machine; production points performers at a real archive."""

from ups_server.dicomweb.app import create_dicomweb_app

__all__ = ["create_dicomweb_app"]
