"""Pixels of one page/slice/frame of a document, for rendering, measuring and export."""

from __future__ import annotations

import threading
from collections import OrderedDict
from io import BytesIO

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset

from . import dicom
from .documents import DocumentInfo
from .storage import BlobStore


class FrameLoader:
    """Reads frames from stored blobs, keeping a small LRU of parsed DICOM datasets."""

    def __init__(self, store: BlobStore, cache_size: int = 8) -> None:
        self.store = store
        self._cache: OrderedDict[str, Dataset] = OrderedDict()
        self._size = cache_size
        self._lock = threading.Lock()

    def dataset(self, sha: str) -> Dataset:
        """The parsed DICOM file of a blob (pixels decoded), from a small LRU."""
        with self._lock:
            ds = self._cache.get(sha)
            if ds is not None:
                self._cache.move_to_end(sha)
                return ds
        ds = pydicom.dcmread(BytesIO(self.store.get(sha)))
        ds.pixel_array  # decode once, cached on the dataset  # noqa: B018
        with self._lock:
            self._cache[sha] = ds
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return ds

    def _entry(self, doc: DocumentInfo, index: int) -> dict:
        if not 0 <= index < doc.frames:
            raise IndexError(f"frame {index} out of range 0..{doc.frames - 1}")
        return doc.frame_index[index]

    def values(self, doc: DocumentInfo, index: int) -> np.ndarray | None:
        """Modality values (HU for CT) of a grayscale DICOM frame; None for other documents."""
        if doc.kind != "dicom":
            return None
        entry = self._entry(doc, index)
        ds = self.dataset(entry["blob"])
        if dicom.is_color(ds):
            return None
        return dicom.frame_pixels(ds, entry["frame"])

    def render(
        self, doc: DocumentInfo, index: int, window: dicom.Window | None = None
    ) -> Image.Image:
        """The frame as an RGB image (DICOM grayscale through ``window`` or the default)."""
        entry = self._entry(doc, index)
        if doc.kind != "dicom":
            with Image.open(BytesIO(self.store.get(entry["blob"]))) as img:
                return img.convert("RGB")
        ds = self.dataset(entry["blob"])
        if dicom.is_color(ds):
            return Image.fromarray(dicom.frame_pixels(ds, entry["frame"])).convert("RGB")
        values = dicom.frame_pixels(ds, entry["frame"])
        grey = dicom.render_grey(ds, values, window, entry["frame"])
        return Image.fromarray(grey, mode="L").convert("RGB")
