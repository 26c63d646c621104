"""Classification and detection metrics, and the illusion gap."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = ["classification_report", "detection_report", "illusion_gap"]


def classification_report(y_true, y_pred, n_classes: int, class_names=None) -> dict:
    """Accuracy, macro precision/recall/F1, per-class figures and the confusion matrix.

    Rows of the confusion matrix are true classes, columns predicted ones.
    """
    labels = np.arange(n_classes)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    names = [str(c) for c in (class_names if class_names is not None else labels)]
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(p.mean()),
        "recall": float(r.mean()),
        "f1": float(f.mean()),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                   "support": int(s[i])}
            for i, name in enumerate(names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def illusion_gap(poisoned_validation_accuracy: float, clean_holdout_accuracy: float) -> float:
    """What the victim sees minus the truth.

    Positive: the poisoned validation split flatters the model (the seeds'
    illusion of high accuracy).  Negative: the validation split looks worse
    than the model really is.
    """
    return float(poisoned_validation_accuracy - clean_holdout_accuracy)


def detection_report(is_flipped, scores, flagged) -> dict:
    """How well suspicion ``scores`` (higher = more suspicious) and ``flagged`` find true flips."""
    is_flipped = np.asarray(is_flipped, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    flagged = np.asarray(flagged, dtype=bool)
    tp = int(np.sum(flagged & is_flipped))
    n_flag, n_true = int(flagged.sum()), int(is_flipped.sum())
    precision = tp / n_flag if n_flag else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    both = 0 < n_true < len(is_flipped)
    k = n_true
    top = np.argpartition(-scores, k - 1)[:k] if 0 < k <= len(scores) else np.array([], dtype=int)
    return {
        "n_true_flips": n_true,
        "n_flagged": n_flag,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auroc": float(roc_auc_score(is_flipped, scores)) if both else float("nan"),
        "average_precision": float(average_precision_score(is_flipped, scores)) if both else float("nan"),
        "precision_at_true_count": float(is_flipped[top].mean()) if k else float("nan"),
    }
