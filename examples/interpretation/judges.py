"""The judges of the demo's claims, trained independently of the flows: probes that read an
attribute from a representation, and a colour judge that reads the colour from an image (the
digit judge is the classifier expert).

Every probe is fitted on the train split and scored on the held-out writers (test split).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from flowkern._checks import check_choice

__all__ = ["PROBES", "ColourJudge", "probe_accuracy"]

PROBES: tuple[str, ...] = ("linear", "knn", "mlp")


def probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   kind: str = "linear") -> float:
    """Test accuracy of a probe fitted on the train split (standardised inputs): ``linear`` = logistic
    regression, ``knn`` = 10-nearest-neighbour vote, ``mlp`` = one-hidden-layer (256 ReLU) network (Adam,
    early stopping on 10% of the train split, fixed seed); each is applied identically to every factor."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    heads = {"linear": lambda: LogisticRegression(max_iter=2000), "knn": lambda: KNeighborsClassifier(10),
             "mlp": lambda: MLPClassifier((256,), alpha=1e-3, early_stopping=True, max_iter=200, random_state=0)}
    probe = make_pipeline(StandardScaler(), heads[check_choice("kind", kind, PROBES)]())
    probe.fit(train_x.detach().numpy(), train_y.numpy())
    return float(probe.score(test_x.detach().numpy(), test_y.numpy()))


class ColourJudge:
    """Logistic regression on 4x4-average-pooled RGB images: predicts the colour of an image."""

    def __init__(self, images: torch.Tensor, colours: torch.Tensor) -> None:
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(max_iter=2000).fit(self._feat(images), colours.numpy())

    @staticmethod
    def _feat(images: torch.Tensor) -> np.ndarray:
        return F.adaptive_avg_pool2d(images.detach(), 4).flatten(1).numpy()

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.model.predict(self._feat(images)))
