"""Crafted pickles for the "files never run code" tests."""


class MarkerPayload:
    """A pickled object whose unpickling would run code: calling ``open(marker, "w")`` creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))
