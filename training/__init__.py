"""Training stages of medeir-rag, importable as ``medeir_rag.training``.

Each stage is one module with ``main(argv)``, run as ``medeir <stage>`` or
``python -m medeir_rag.training.<stage>`` (so ``torchrun -m`` works).
"""
