"""The two bundled models the gate ships with: configured in gate.toml exactly as a user's model would be."""
