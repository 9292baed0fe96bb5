"""Reading pickles that come from outside (the ecosystem's few-shot ``split_fewshot/*.pkl`` and ImageNet
``preprocessed.pkl``) without running code.

``pickle.load`` executes whatever a file asks for (any importable callable), so a crafted file runs code when it is
read. :func:`restricted_pickle_load` admits only the globals the caller lists; anything else stops the load with
:class:`ForbiddenPickleContent` before it is called.
"""
import pickle

__all__ = ["ForbiddenPickleContent", "restricted_pickle_load"]

# Globals every pickle of plain objects may use besides its own classes: protocol 0/1 rebuild instances with
# copyreg._reconstructor(cls, object, state), which only calls object.__new__(cls) for an admitted cls. Python 3
# writes protocol 0/1 pickles with the Python 2 names (copy_reg, __builtin__), so both spellings are admitted.
_PLAIN_OBJECT_GLOBALS = {
    ("copyreg", "_reconstructor"), ("builtins", "object"), ("copy_reg", "_reconstructor"), ("__builtin__", "object"),
}


class ForbiddenPickleContent(pickle.UnpicklingError):
    """A pickle asked for a global (class or function) outside the allowed set; nothing of it was executed."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path, allowed):
        super().__init__(file)
        self.path, self.allowed = path, allowed

    def find_class(self, module, name):
        if (module, name) not in self.allowed:
            raise ForbiddenPickleContent(
                f'{self.path} asks to load "{module}.{name}", which such a file never contains; it was not '
                "executed. The file is not what its name says (possibly crafted): delete it, or find out where "
                "it came from."
            )
        return super().find_class(module, name)


def restricted_pickle_load(path, allowed_globals):
    """Unpickle ``path`` admitting only ``allowed_globals`` (a set of ``(module, name)``) plus plain-object helpers.

    Raises:
        ForbiddenPickleContent: the file refers to any other global (nothing was executed).
        pickle.UnpicklingError, EOFError, ...: the file is not a complete pickle.
    """
    allowed = set(allowed_globals) | _PLAIN_OBJECT_GLOBALS
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f, path, allowed).load()
