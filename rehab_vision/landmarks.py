"""Pose landmarks per frame and per sequence, and the npz layout they are stored in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

N_LANDMARKS = 33
"""MediaPipe Pose (BlazePose) topology."""

# BlazePose landmark indices used by the exercise specs.
NAMES: tuple[str, ...] = (
    "nose",
    "left_eye_inner",
    "left_eye",
    "left_eye_outer",
    "right_eye_inner",
    "right_eye",
    "right_eye_outer",
    "left_ear",
    "right_ear",
    "mouth_left",
    "mouth_right",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_pinky",
    "right_pinky",
    "left_index",
    "right_index",
    "left_thumb",
    "right_thumb",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "left_heel",
    "right_heel",
    "left_foot_index",
    "right_foot_index",
)
INDEX: dict[str, int] = {name: i for i, name in enumerate(NAMES)}


def _mirror_permutation() -> npt.NDArray[np.intp]:
    perm = np.arange(N_LANDMARKS)
    for i, name in enumerate(NAMES):
        if name.startswith("left_"):
            perm[i] = INDEX["right_" + name[5:]]
        elif name.startswith("right_"):
            perm[i] = INDEX["left_" + name[6:]]
    return perm


MIRROR_PERMUTATION = _mirror_permutation()
"""Index permutation that swaps every left landmark with its right counterpart."""

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Landmarks:
    """One frame's pose.

    ``image``: [33, 4] = x, y normalised to the frame (0..1), z (relative depth, same scale as x),
    visibility. ``world``: [33, 4] = x, y, z in metres (hip-centred, y down), visibility.
    """

    image: FloatArray
    world: FloatArray

    @classmethod
    def from_row(cls, row: FloatArray) -> Landmarks:
        """Build from one [33, 8] row of the npz layout."""
        return cls(image=row[:, :4], world=row[:, 4:])

    def as_row(self) -> FloatArray:
        """The [33, 8] row of the npz layout."""
        return np.concatenate([self.image, self.world], axis=1).astype(np.float32)

    @property
    def visibility(self) -> FloatArray:
        return self.image[:, 3]


def image_xyv(lm: Landmarks | None, decimals: int = 3) -> list[float] | None:
    """The 2D pose for the wire: flat [x0, y0, v0, x1, ...] (image x, y normalised to the frame,
    clipped to -1..2; visibility 0..1), rounded; None without a person or with a non-finite
    value."""
    if lm is None:
        return None
    xyv = lm.image[:, (0, 1, 3)].astype(np.float64)
    if not np.isfinite(xyv).all():
        return None
    xyv[:, :2] = np.clip(xyv[:, :2], -1.0, 2.0)
    xyv[:, 2] = np.clip(xyv[:, 2], 0.0, 1.0)
    return [round(float(v), decimals) + 0.0 for v in xyv.ravel()]  # + 0.0: no "-0.0"


@dataclass(slots=True)
class PoseSequence:
    """Landmarks of a whole clip: ``lm`` [T, 33, 8] (NaN rows = no person), times in seconds."""

    lm: FloatArray
    fps: float
    frame_size: tuple[int, int] = (0, 0)  # (H, W) of the processed frames
    t: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    ms: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        if self.lm.ndim != 3 or self.lm.shape[1:] != (N_LANDMARKS, 8):
            raise ValueError(f"landmarks must be [T, {N_LANDMARKS}, 8], got {self.lm.shape}")
        if not self.fps > 0:
            raise ValueError("fps must be positive")
        if len(self.t) != len(self.lm):
            self.t = np.arange(len(self.lm), dtype=np.float64) / self.fps

    def __len__(self) -> int:
        return len(self.lm)

    def frame(self, i: int) -> Landmarks | None:
        """Landmarks of frame ``i``, or None when no person was found in it."""
        row = self.lm[i]
        if np.isnan(row).any():
            return None
        return Landmarks.from_row(row)

    @property
    def duration_s(self) -> float:
        return float(len(self.lm) / self.fps)


def load_npz(path: str | Path) -> PoseSequence:
    """Read the npz layout (``lm`` [T,33,8] float32, ``fps``, ``ms``, ``frame_size`` [H, W])."""
    with np.load(path) as data:
        missing = {"lm", "fps"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: not a landmarks file (missing {sorted(missing)})")
        lm = np.asarray(data["lm"], dtype=np.float32)
        fps = float(data["fps"])
        ms = np.asarray(data["ms"], dtype=np.float64) if "ms" in data.files else np.zeros(0)
        size = tuple(int(v) for v in data["frame_size"]) if "frame_size" in data.files else (0, 0)
    return PoseSequence(lm=lm, fps=fps, frame_size=(size[0], size[1]), ms=ms)


def save_npz(path: str | Path, seq: PoseSequence) -> None:
    """Write a sequence in the same npz layout."""
    np.savez_compressed(
        path,
        lm=seq.lm.astype(np.float32),
        fps=np.float64(seq.fps),
        ms=np.asarray(seq.ms, dtype=np.float64),
        frame_size=np.asarray(seq.frame_size),
    )
