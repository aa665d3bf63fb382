"""The data layer: reading corpora (io), tokenizers, batching and masking."""
