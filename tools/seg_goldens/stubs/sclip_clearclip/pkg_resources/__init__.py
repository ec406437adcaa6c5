"""Stand-in: SCLIP clip/clip.py needs only `pkg_resources.packaging.version`."""

import packaging  # noqa: F401
import packaging.version  # noqa: F401
