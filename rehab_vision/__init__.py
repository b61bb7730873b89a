"""Pose estimation, exercise specs, rep counting and form scoring for guided rehab."""
