"""Fine-tuning a registry CNN on a binary label (``scanatlas finetune``, Classifiers page).

- :mod:`core.finetune.data`: decoded images in a bounded bank; flips and small rotations.
- :mod:`core.finetune.train`: one split's training loop, early stopping, per-epoch checkpoints
  (weights_only-safe), mixed precision on CUDA.
- :mod:`core.finetune.study`: :func:`finetune_study`, the linear probe's patient folds, one more
  row of the comparison table, a named run of kind ``finetune``.
- :mod:`core.finetune.encoder`: the fine-tuned trunk registered as an encoder
  (``<base>-ft-<run>``), :func:`register_finetuned_encoders`.

The task module ``core.finetune.study`` is imported by name (it embeds datasets), so that this
package stays a primitive the encoder picker can import cheaply.
"""

from __future__ import annotations

from core.finetune.encoder import derived_name, register_finetuned_encoders
from core.finetune.train import EpochResult, FineTuneCancelled

__all__ = [
    "EpochResult",
    "FineTuneCancelled",
    "derived_name",
    "register_finetuned_encoders",
]
