import torch
import torch.nn as nn


class SegDataPreProcessor(nn.Module):
    """mmseg 1.x SegDataPreProcessor, test path (no test_cfg => no padding)."""

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
        inputs = data["inputs"]
        data_samples = data.get("data_samples", None)
        if self.channel_conversion and inputs[0].size(0) == 3:
            inputs = [_input[[2, 1, 0], ...] for _input in inputs]
        inputs = [_input.float() for _input in inputs]
        if self._enable_normalize:
            inputs = [(_input - self.mean) / self.std for _input in inputs]
        assert not training and len(inputs) == 1
        inputs = torch.stack(inputs, dim=0)
        return dict(inputs=inputs, data_samples=data_samples)
