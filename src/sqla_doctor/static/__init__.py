"""The static analyzer: reads source with ``ast``; never imports or runs it."""
