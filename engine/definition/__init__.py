"""Reading and checking definitions: YAML text to a checked model."""
