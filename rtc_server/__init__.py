"""teleconsult server process: app assembly, config, CLI, rooms, media, records."""

__version__ = "0.1.0"
