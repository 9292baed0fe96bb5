"""Class names that read well inside a prompt ("a photo of a {}.")."""

import re

# A lower-case letter or digit followed by an upper-case letter ("bareLand"), or an acronym
# followed by a capitalised word ("RSICDPark"): both are word boundaries.
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def readable_classname(folder_name):
    """Turn a folder name into words: "&" -> " and ", "_" / "-" -> " ", camel case split,
    whitespace collapsed, lower case. E.g. "harbor&port" -> "harbor and port",
    "BaseballField" -> "baseball field", "dense_residential" -> "dense residential"."""
    words = folder_name.replace("&", " and ").replace("_", " ").replace("-", " ")
    words = _CAMEL_BOUNDARY.sub(" ", words)
    return " ".join(words.split()).lower()
