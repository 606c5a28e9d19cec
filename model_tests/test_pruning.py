"""A check of this repository's own, beside the plugin's: the `prune` step's artifact really is sparse.

Asking for the `prune` fixture (the artifact that step made) runs the test for every variant that prunes."""


def test_pruned_weights_are_sparse(prune, variant, zero_fraction, gate_check):
    rate = next(s.params["rate"] for s in variant.steps if s.name == "prune")
    gate_check("pruned_zero_fraction", zero_fraction(prune), ">=", rate * 0.99, note=f"prune rate {rate}")
