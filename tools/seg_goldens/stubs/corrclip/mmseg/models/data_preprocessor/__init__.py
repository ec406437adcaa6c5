import torch


class SegDataPreProcessor:
    """Test-mode mmseg 1.x SegDataPreProcessor for one image (no size / size_divisor / padding).

    Called by the generator (not by their code) as ``model.data_preprocessor(chw)``: uint8 CHW in the loader's
    channel order (mmcv LoadImageFromFile: BGR) -> BGR->RGB flip if bgr_to_rgb, float(), (x - mean) / std,
    a batch of one (1, 3, H, W).
    """

    def __init__(self, mean=None, std=None, bgr_to_rgb=False, **kwargs):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.bgr_to_rgb = bgr_to_rgb

    def __call__(self, img_chw_uint8):
        x = img_chw_uint8
        if self.bgr_to_rgb:
            x = x[[2, 1, 0], ...]
        x = x.float()
        return ((x - self.mean) / self.std).unsqueeze(0)
