import torch.nn as nn


class BaseSegmentor(nn.Module):
    """Stub of mmseg.models.segmentors.BaseSegmentor: stores the data preprocessor, nothing else."""

    def __init__(self, data_preprocessor=None, init_cfg=None):
        super().__init__()
        self.data_preprocessor = data_preprocessor
