"""The walk over a model's Bayesian layers, shared by the layers, the losses and the uncertainty tools."""

import inspect

import keras


def bayesian_modules(model):
    """The outermost BayesianModules inside ``model`` (a model, a layer, or a BayesianModule itself).

    The search goes through nested layers and sub-models but stops at each BayesianModule: its
    ``kl_cost()`` covers the Bayesian modules inside it (the LSTM's embedding, say), so counting
    those again would count their KL twice. A layer used at several places is listed once.
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"model must be a Keras model or layer, got {type(model).__name__}")
    found, seen = [], set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if getattr(layer, "is_bayesian", False):
            found.append(layer)
            return
        for child in layer._flatten_layers(include_self=False, recursive=False):
            visit(child)

    visit(model)
    return found


def child_modules(module):
    """The outermost BayesianModules inside ``module``, not counting ``module`` itself."""
    found = []
    for child in module._flatten_layers(include_self=False, recursive=False):
        found += [m for m in bayesian_modules(child) if m not in found]
    return found


def kl_cost_of(module, analytic=False):
    """``module.kl_cost()``, or ``module.kl_cost(analytic=True)``: a custom module written the illia
    way, whose ``kl_cost`` takes no argument, serves the default only."""
    if not analytic:
        return module.kl_cost()
    if "analytic" not in inspect.signature(module.kl_cost).parameters:
        raise ValueError(
            f"the analytic KL needs kl_cost(analytic=True), but the kl_cost() of module '{module.name}' "
            f"({type(module).__name__}) takes no analytic argument: give it one, or use the one-sample KL "
            "(analytic=False, analytic_kl=False)"
        )
    return module.kl_cost(analytic=True)
