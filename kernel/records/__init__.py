"""Consult records: storage of rooms, participants, admissions and chat."""
