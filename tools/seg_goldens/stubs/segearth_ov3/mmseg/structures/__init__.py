class SegDataSample:
    """Stand-in for mmseg SegDataSample: metainfo plus set_data() (used by the generator, not by SegEarth-OV3)."""

    def __init__(self, metainfo=None):
        self.metainfo = dict(metainfo or {})

    def set_metainfo(self, metainfo):
        self.metainfo.update(metainfo)

    def set_data(self, data):
        for k, v in data.items():
            setattr(self, k, v)
