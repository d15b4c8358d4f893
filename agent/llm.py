"""litellm, imported once on first use: the import takes about 3 s, which `agent log` should not pay.

Every LLM call goes through litellm (agent/coder.py); the context budget (agent/budget.py) reads
its model list and token counter. Both take the module from here."""


def litellm():
    import litellm as module
    module.suppress_debug_info = True  # it otherwise prints provider lists and help links
    return module
