"""The SFU: peer sessions and encoded-frame forwarding on aiortc."""
