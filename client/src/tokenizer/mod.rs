//! Tokenizers from GGUF metadata or `tokenizer.json`.
