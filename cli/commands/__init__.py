"""The command groups of `sopflow`, one module each."""
