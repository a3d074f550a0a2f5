"""Counterfactual evaluation: attributors beside the kernels, retraining on subsets, LDS and friends."""
