class PixelData:
    """Stub of mmengine.structures.PixelData: holds the fields given as keyword arguments."""

    def __init__(self, metainfo=None, **kwargs):
        self.metainfo = dict(metainfo or {})
        for k, v in kwargs.items():
            setattr(self, k, v)
