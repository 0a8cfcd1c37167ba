"""One module per runtime detector; found automatically by the registry."""
