"""The loss kernel: covariance and correlation of per-sample losses across weights drawn by SGLD
around the trained weights, its maps of the data, and the multitask (modular arithmetic) validation."""
