"""kernelscope: explain a trained classifier through kernels between data points."""

__version__ = "0.1.0"
# Bumped whenever a file the library writes changes format, so cached task results that point at old files miss.
# 2: kGLM provenance stored as one sorted-JSON metadata entry (deterministic bytes).
# 3: one verified format (kernelscope.core.artifacts): content hash over values and provenance on every file.
ARTIFACT_FORMAT = 3
