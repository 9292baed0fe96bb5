"""Config helpers shared by the engine and data tests."""


def set_values(cfg, overrides):
    """Set dotted keys (``{"OPTIM.LR": 0.1}``) on a yacs config, keeping the given Python values as they are."""
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return cfg
