class _Registry:
    """Stand-in for an mmengine Registry: ``register_module()`` records the class by name and returns it."""

    def __init__(self, name):
        self.name = name
        self.module_dict = {}

    def register_module(self, name=None, force=False, module=None):
        def deco(cls):
            self.module_dict[name or cls.__name__] = cls
            return cls

        return deco(module) if module is not None else deco


MODELS = _Registry("model")
