"""Shared documents and live annotation (pycrdt on the server, Yjs in the browser)."""
