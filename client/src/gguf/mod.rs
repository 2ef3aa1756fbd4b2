//! GGUF model files (llama.cpp's format): a validating reader over a memory map, and a writer.
