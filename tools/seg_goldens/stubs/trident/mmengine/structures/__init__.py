class PixelData:
    """Stand-in for mmengine PixelData: keeps the fields passed in."""

    def __init__(self, **kwargs):
        for k, v in kwargs.items():
            setattr(self, k, v)
