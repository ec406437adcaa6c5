import torch.nn as nn


class BaseSegmentor(nn.Module):
    """mmseg BaseSegmentor / mmengine BaseModel, inference path only."""

    def __init__(self, data_preprocessor=None, init_cfg=None):
        super().__init__()
        if data_preprocessor is None:
            data_preprocessor = nn.Identity()
        self.data_preprocessor = data_preprocessor

    def forward(self, inputs, data_samples=None, mode="tensor"):
        if mode == "predict":
            return self.predict(inputs, data_samples)
        raise NotImplementedError(mode)

    def test_step(self, data):
        # mmengine BaseModel.test_step: data_preprocessor(data, False) then _run_forward(mode='predict')
        data = self.data_preprocessor(data, False)
        return self(**data, mode="predict")
