//! Compute kernels: dot products and matrix products straight from quantized blocks.
