"""The OpenAI ``clip`` package (clip-anytorch), imported on first use.

It imports torchvision (over a second of start-up) and the deprecated ``pkg_resources``; importing it lazily keeps
``train.py --help`` and config errors fast, since no model is built for them.
"""
import functools
import warnings


@functools.lru_cache(maxsize=None)
def openai_clip():
    """The ``clip`` package, with ``clip.model`` and ``clip.clip`` loaded."""
    with warnings.catch_warnings():  # clip-anytorch imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        import clip
        import clip.model  # noqa: F401
    return clip
