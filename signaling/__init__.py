"""Socket.IO signaling: message schemas, join tokens, limits, the consult namespace."""
