"""VGG16 up to its fc2 layer, the feature extractor of improved precision and recall (Kynkäänniemi et al. 2019).

Only the architecture lives here; the ImageNet weights are the user's file (nothing is downloaded). The layout is
torchvision's, so a file written with ``safetensors.torch.save_file(torchvision.models.vgg16(weights=...)
.state_dict(), "vgg16.safetensors")`` loads as it is (its ``classifier.6`` logits layer is ignored).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VGG16Features"]

_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
FEATURES = 4096


class VGG16Features(nn.Module):
    """VGG16 (configuration D) returning the fc2 activations after their ReLU (Keras' ``fc2``): ``(N, 4096)``.

    ``forward`` takes RGB ``(N, 3, H, W)`` in [0, 1], resizes to 224 × 224 (bilinear, antialiased) and applies the
    ImageNet normalisation the torchvision weights expect. Built with random weights; use
    :meth:`from_safetensors` for real ones.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, FEATURES),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(FEATURES, FEATURES),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x: expected RGB images (N, 3, H, W), found shape {tuple(x.shape)}")
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = self.features((x - mean) / std)
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    @classmethod
    def from_safetensors(cls, path: str | Path, device: str | torch.device = "cpu") -> VGG16Features:
        """The model with the weights of a safetensors file in torchvision's VGG16 layout, in eval mode."""
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"weights: expected a safetensors file of VGG16 weights, found no file at {path}")
        state = {k: v for k, v in load_file(str(path), device=str(device)).items() if not k.startswith("classifier.6.")}
        with torch.device("meta"):  # no random init of 134 M parameters that are overwritten at once
            model = cls()
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        if expected != found:
            missing = sorted(expected.keys() - found.keys())
            extra = sorted(found.keys() - expected.keys())
            wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
            raise ValueError(
                f"weights: expected torchvision's VGG16 layout in {path}, found missing keys {missing[:5]}, "
                f"unexpected keys {extra[:5]}, wrong shapes {[(k, found[k], expected[k]) for k in wrong[:5]]}"
            )
        model.load_state_dict(state, assign=True)
        return model.eval()
