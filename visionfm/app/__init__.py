"""``visionfm app``: a local web page for looking at results — zero-shot segmentation, grounding, click-to-segment.

The server (:mod:`visionfm.app.server`) is the standard library's ``http.server`` with one static page
(``static/index.html``, plain JavaScript): nothing to install beyond visionfm, nothing fetched from the network,
and element ids a browser test can drive. docs/app.md says why this rather than Gradio.
"""

from __future__ import annotations

from .server import AppConfig, VisionApp, create_server, serve

__all__ = ["AppConfig", "VisionApp", "create_server", "serve"]
