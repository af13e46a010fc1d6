"""The medeir network: configuration, ALiBi attention, modeling, tokenizer, model folders, saving.

Imports nothing from the other subpackages.
"""
