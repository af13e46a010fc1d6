"""medeir-rag: medical text embeddings and RAG components.

Importing this package registers the ``medeir`` model type with transformers'
Auto classes, which is all that ``SentenceTransformer(path)`` and
``CrossEncoder(path)`` need to load a medeir model without ``trust_remote_code``.
"""

from medeir_rag.model.configuration import MedeirConfig
from medeir_rag.model.modeling import (
    MedeirForMaskedLM,
    MedeirForSequenceClassification,
    MedeirModel,
    register_auto_classes,
)

register_auto_classes()

__version__ = "0.1.0"

__all__ = [
    "MedeirConfig",
    "MedeirForMaskedLM",
    "MedeirForSequenceClassification",
    "MedeirModel",
    "__version__",
]
