"""This repository gates its bundled models with the installed tinygate plugin, as any repository does: the
plugin finds gate.toml beside this file; fixtures/ holds this repository's own fixtures."""

pytest_plugins = ["fixtures.sparsity"]
