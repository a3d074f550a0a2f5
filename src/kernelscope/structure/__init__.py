"""Structure probes: which internal structures of a network survive any change of coordinates
(layer-Jacobian rank and spectra), how degenerate its parameters are (activation and gradient Gram
spectra, synchronized ReLUs, LLC-based effective parameter count), and the interaction basis.

Definitions: MATH.md, "Structure probes". A *layer* is a named module's output, flattened per point,
or the pseudo-layers ``input`` (the model's input) and ``output`` (its logits).
"""
