"""Musical quality: figures computed on notes, the prompts they are measured on, the style classifier, and the
judge that generates from held-out prompts in each mode and compares the model with the real music and chance.
See docs/quality.md."""
