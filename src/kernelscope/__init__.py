"""kernelscope: explain a trained classifier through kernels between data points."""

__version__ = "0.1.0"
