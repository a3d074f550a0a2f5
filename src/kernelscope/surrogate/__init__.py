"""NTK surrogates: the kernel GLM fit on a kernel, its faithfulness to the network (τ_K, TAD, R_Miss),
per-training-point attribution, explanations, the kernel comparison and multi-seed tables."""
