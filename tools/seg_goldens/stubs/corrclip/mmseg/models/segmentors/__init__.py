import torch.nn as nn


class BaseSegmentor(nn.Module):
    """Stand-in for mmseg BaseSegmentor: an nn.Module that keeps the data preprocessor."""

    def __init__(self, data_preprocessor=None, init_cfg=None):
        super().__init__()
        self.data_preprocessor = data_preprocessor
