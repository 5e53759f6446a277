"""``treadle.errors`` inside the guest: the SDK's own classes, bundled by the build."""

from treadle.runtime.errors import *  # noqa: F403
