"""The kernel: rooms, records, routing, tokens and errors; it uses no feature."""
