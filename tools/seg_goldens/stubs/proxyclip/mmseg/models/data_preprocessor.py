import torch
import torch.nn as nn


class SegDataPreProcessor(nn.Module):
    """Test-mode behaviour of mmseg 1.x SegDataPreProcessor.forward (no size / size_divisor / test_cfg).

    inputs: list of uint8 CHW tensors in the loader's channel order (mmcv LoadImageFromFile: BGR).
    """

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
        assert size is None and size_divisor is None and test_cfg is None, "stub covers ProxyCLIP's use only"
        self.channel_conversion = rgb_to_bgr or bgr_to_rgb
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), False)

    def forward(self, data, training=False):
        inputs = data["inputs"]
        if self.channel_conversion and inputs[0].size(0) == 3:
            inputs = [_input[[2, 1, 0], ...] for _input in inputs]
        inputs = [_input.float() for _input in inputs]
        inputs = [(_input - self.mean) / self.std for _input in inputs]
        assert len(inputs) == 1
        inputs = torch.stack(inputs, dim=0)
        return dict(inputs=inputs, data_samples=data.get("data_samples", None))
