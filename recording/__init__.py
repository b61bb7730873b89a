"""Consented recording: consent per participant, one file per track."""
