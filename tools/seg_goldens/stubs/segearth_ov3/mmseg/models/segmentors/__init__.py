import torch.nn as nn


class BaseSegmentor(nn.Module):
    """Stand-in for mmseg BaseSegmentor (mmengine BaseModel): SegEarth-OV3 calls ``super().__init__()`` only."""

    def __init__(self, data_preprocessor=None, init_cfg=None):
        super().__init__()
        self.data_preprocessor = data_preprocessor
        self.init_cfg = init_cfg
