"""Examples of user extensions (importable as ``examples.*`` from the repository root)."""
