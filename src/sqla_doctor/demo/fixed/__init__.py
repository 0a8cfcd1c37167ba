"""The same app as `bad`, with every pitfall fixed the way the seed articles recommend."""
