"""Stand-in for mmengine: only mmengine.structures.PixelData."""
