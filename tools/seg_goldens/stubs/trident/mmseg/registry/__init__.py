class _Registry:
    def __init__(self):
        self.modules = {}

    def register_module(self, name=None, force=False, module=None):
        def deco(cls):
            self.modules[name or cls.__name__] = cls
            return cls

        return deco


MODELS = _Registry()
