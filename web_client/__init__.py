"""The browser app, served by the server itself; every asset is local."""
