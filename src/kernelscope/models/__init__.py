"""Models: the architecture zoo, training, checkpoints (safetensors with a verified sidecar), users' own
models, and the one home of output heads (binary vs multiclass logits, probabilities, losses)."""
