class PixelData:
    def __init__(self, metainfo=None, **kwargs):
        self.metainfo = dict(metainfo or {})
        for k, v in kwargs.items():
            setattr(self, k, v)


class SegDataSample:
    """Minimal mmseg SegDataSample: metainfo + set_data."""

    def __init__(self, metainfo=None):
        self.metainfo = dict(metainfo or {})

    def set_data(self, data):
        for k, v in data.items():
            setattr(self, k, v)
