"""The ``[pacs]`` and ``[uploads]`` sections of the server settings (rtc_server/config.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PacsSettings(BaseModel):
    """A PACS that exported DICOM (originals, GSPS/CSPS, SR) can be sent to with C-STORE."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(104, ge=1, le=65535)
    called_ae: str = Field(pattern=r"^[ -\[\]-~]{1,16}$")  # the PACS's AE title (no backslash)
    calling_ae: str = Field("TELECONSULT", pattern=r"^[ -\[\]-~]{1,16}$")
    timeout_s: float = Field(30.0, gt=0, le=600)


class UploadSettings(BaseModel):
    """Bounds on document uploads (annotation.uploads.UploadLimits)."""

    model_config = ConfigDict(extra="forbid")

    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_total_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    max_files: int = Field(1000, ge=1, le=100000)
    max_pixels: int = Field(40_000_000, ge=1)  # one image or rendered page
    max_total_pixels: int = Field(400_000_000, ge=1)  # all frames of a DICOM series
    max_pdf_pages: int = Field(100, ge=1, le=10000)
    pdf_dpi: float = Field(144.0, ge=36, le=600)
