"""Generic helpers (Dassl's ``dassl.utils``): star-exports of every helper module."""

from .logger import *  # noqa: F401,F403
from .meters import *  # noqa: F401,F403
from .registry import *  # noqa: F401,F403
from .tools import *  # noqa: F401,F403
from .torchtools import *  # noqa: F401,F403
