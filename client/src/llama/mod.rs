//! The llama-family decoder: weights from GGUF, forward pass, KV cache, sampling.
