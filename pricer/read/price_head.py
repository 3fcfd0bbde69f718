"""A price head beside the LLM: a ridge regression in log price on the outputs of the model's last
layers at the prompt's last token (the position whose logits give the first price token).

fit reads the train split's prompts once with the weights it keeps, fits the head on those
frozen features, and the blend (`blend.py`) mixes its price into the LLM's in log price at the
weight with the lowest validation MAE (0: the LLM alone). The features are the final norm's
output, then the outputs of the layers before it, side by side (`model.blend.head_layers` of
them); the regression standardises each, and its strength is chosen by 5-fold cross-validation
on the train split alone.

Saved beside the adapter as `price_head.safetensors` (its standardisation and weights, the
layers it reads in the header), with its SHA-256 in the recipe, and read by every read of the
adapter as the blend is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pricer.read.tfidf import BlendError

HEAD_FILE = "price_head.safetensors"
ALPHAS = np.logspace(-1, 5, 13)  # the ridge strengths cross-validation chooses from
FOLDS = 5


def last_token_states(hidden_states: tuple[torch.Tensor, ...], column: int, layers: int) -> np.ndarray:
    """Each row's features: the last `layers` hidden states at `column` (the final norm's output
    first, then the layers' outputs before it), side by side, in float64."""
    if layers > len(hidden_states):
        raise BlendError(
            f"model.blend.head_layers {layers}: the model has {len(hidden_states)} hidden states "
            f"(its embeddings and {len(hidden_states) - 1} layers' outputs)"
        )
    states = hidden_states[len(hidden_states) - layers :][::-1]
    return torch.cat([h[:, column].float() for h in states], -1).double().cpu().numpy()


@dataclass(frozen=True)
class PriceHead:
    """log1p(price) = standardised features @ coef + intercept, on the last `layers` states."""

    layers: int
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    alpha: float = 0.0  # the ridge strength cross-validation chose

    @classmethod
    def fit(cls, features: np.ndarray, prices, layers: int) -> PriceHead:
        from sklearn.linear_model import RidgeCV

        x = np.asarray(features, dtype=np.float64)
        if len(x) < FOLDS:
            raise BlendError(f"a price head needs at least {FOLDS} training items, got {len(x)}")
        mean, scale = x.mean(0), x.std(0)
        scale[scale == 0] = 1.0
        ridge = RidgeCV(alphas=ALPHAS, cv=FOLDS).fit(
            (x - mean) / scale, np.log1p(np.asarray(prices, dtype=np.float64))
        )
        coef = np.asarray(ridge.coef_, dtype=np.float64)
        return cls(int(layers), mean, scale, coef, float(ridge.intercept_), float(ridge.alpha_))

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return np.maximum(np.expm1(x @ self.coef + self.intercept), 0.0)

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        tensors = {
            "mean": self.mean,
            "scale": self.scale,
            "coef": self.coef,
            "intercept": np.array([self.intercept]),
        }
        save_file(
            tensors,
            str(Path(folder) / HEAD_FILE),
            metadata={"layers": str(self.layers), "alpha": repr(self.alpha)},
        )

    @classmethod
    def load(cls, folder: Path) -> PriceHead:
        from safetensors import SafetensorError, safe_open

        path = Path(folder) / HEAD_FILE
        if not path.is_file():
            raise BlendError(
                f"{path} is missing: the blend its run chose reads the price head fit saved there"
            )
        try:
            with safe_open(str(path), framework="numpy") as file:
                header = file.metadata() or {}
                layers, alpha = int(header["layers"]), float(header["alpha"])
                t = {name: file.get_tensor(name) for name in ("mean", "scale", "coef", "intercept")}
        except (SafetensorError, KeyError, ValueError, OSError) as error:
            raise BlendError(f"{path}: not a price head fit saved ({error})") from None
        return cls(layers, t["mean"], t["scale"], t["coef"], float(t["intercept"][0]), alpha)
