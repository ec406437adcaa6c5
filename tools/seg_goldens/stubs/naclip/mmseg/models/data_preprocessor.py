import torch
import torch.nn as nn


class SegDataPreProcessor(nn.Module):
    """Test-mode stand-in for mmseg 1.x SegDataPreProcessor (no padding, batch of one)."""

    def __init__(
        self,
        mean=None,
        std=None,
        size=None,
        size_divisor=None,
        pad_val=0,
        seg_pad_val=255,
        bgr_to_rgb=False,
        rgb_to_bgr=False,
        batch_augments=None,
        test_cfg=None,
    ):
        super().__init__()
        assert not (bgr_to_rgb and rgb_to_bgr)
        assert size is None and size_divisor is None and test_cfg is None, "padding not stubbed"
        self.channel_conversion = rgb_to_bgr or bgr_to_rgb
        self._enable_normalize = mean is not None
        if mean is not None:
            self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), False)
            self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), False)

    def forward(self, data, training=False):
        assert not training
        inputs = data["inputs"]  # list of uint8 CHW tensors in the loader's (BGR) channel order
        if self.channel_conversion and inputs[0].size(0) == 3:
            inputs = [x[[2, 1, 0], ...] for x in inputs]
        inputs = [x.float() for x in inputs]
        if self._enable_normalize:
            inputs = [(x - self.mean) / self.std for x in inputs]
        assert len(inputs) == 1
        return dict(inputs=torch.stack(inputs, dim=0), data_samples=data.get("data_samples"))
