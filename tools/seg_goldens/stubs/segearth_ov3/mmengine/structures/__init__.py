class PixelData:
    """Stand-in for mmengine.structures.PixelData: keeps the given fields."""

    def __init__(self, metainfo=None, **kwargs):
        self.metainfo = dict(metainfo or {})
        for k, v in kwargs.items():
            setattr(self, k, v)
