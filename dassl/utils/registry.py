"""Name -> object registry (fvcore style), used for trainers, datasets and evaluators."""

__all__ = ["Registry"]


class Registry:
    """Map names to classes or functions.

    Usage as a decorator::

        TRAINER_REGISTRY = Registry("TRAINER")

        @TRAINER_REGISTRY.register()
        class MyTrainer: ...

    or as a call: ``TRAINER_REGISTRY.register(MyTrainer)``. The key is ``obj.__name__``.
    """

    def __init__(self, name):
        self._name = name
        self._obj_map = {}

    def _do_register(self, name, obj, force=False):
        if name in self._obj_map and not force:
            raise KeyError(
                f'An object named "{name}" was already registered in "{self._name}" registry; '
                "rename it, or pass force=True to replace the existing entry"
            )
        self._obj_map[name] = obj

    def register(self, obj=None, force=False):
        """Register ``obj`` under ``obj.__name__``; without ``obj`` return a decorator."""
        if obj is None:

            def wrapper(fn_or_class):
                self._do_register(fn_or_class.__name__, fn_or_class, force=force)
                return fn_or_class

            return wrapper

        self._do_register(obj.__name__, obj, force=force)
        return obj

    def get(self, name):
        """Return the object registered as ``name``; ``KeyError`` listing the known names otherwise."""
        if name not in self._obj_map:
            raise KeyError(
                f'Object name "{name}" does not exist in "{self._name}" registry; '
                f"registered names: {self.registered_names()} "
                "(was the module that registers it imported?)"
            )
        return self._obj_map[name]

    def registered_names(self):
        """Names in registration order."""
        return list(self._obj_map.keys())

    def __contains__(self, name):
        return name in self._obj_map

    def __repr__(self):
        return f"Registry(name={self._name!r}, names={self.registered_names()})"
