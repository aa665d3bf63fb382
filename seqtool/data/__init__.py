"""The data layer: reading corpora (io), tokenizers, and the recipe-file format (recipes)."""
