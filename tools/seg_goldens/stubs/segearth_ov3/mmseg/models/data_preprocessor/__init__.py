class SegDataPreProcessor:
    """Imported by segearthov3_segmentor.py and never used there (it reads the image file itself)."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("not stubbed: SegEarth-OV3's segmentor does not use it")
