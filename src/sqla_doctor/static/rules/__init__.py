"""One module per rule, one folder per category; found automatically by the registry."""
