"""The one-sample KL that a layer's fused op computed in its last call, and when kl_cost may use it.

The rule (docs/design.md, "The KL term"): the KL tensor of a call is used only in the graph that
built the call (the same ``tf.function`` trace, not a branch or loop body inside it, not another
function, never in eager mode), and only while no operation added to that graph after the call
takes one of the layer's variables other than to read it. Every write to a resource variable
(an assignment, an optimizer's update, a ``freeze()``, another call, which assigns the seed)
is an operation that takes the variable's handle, directly or through a function or control-flow
op that captures it, so a KL that passes the check was computed from the values that kl_cost
would read: the same mu, rho, priors, seed and frozen flag.
"""

import tensorflow as tf


def graph_building():
    """Whether ops are being added to a graph (a ``tf.function`` trace), not run eagerly."""
    return not tf.executing_eagerly()


class CallKl:
    """The KL output of a layer's last call, with the graph and position it was built at."""

    def __init__(self):
        self.forget()

    def forget(self):
        self._kl = self._graph = None
        self._position = 0

    def remember(self, kl):
        self._kl = kl
        self._graph = tf.compat.v1.get_default_graph()
        self._position = len(self._graph.get_operations())

    @tf.autograph.experimental.do_not_convert
    def take(self, kl_variables):
        """The remembered KL when the rule above allows it here, else None; ``kl_variables()``
        lists the variables the KL reads, every one of which the call used (a variable this graph
        does not hold as a captured handle is one whose writes the check could miss: None)."""
        graph = tf.compat.v1.get_default_graph()
        if self._kl is None or graph is not self._graph or not isinstance(graph, tf.__internal__.FuncGraph):
            return None
        captured = {id(external): internal for external, internal in graph.captures}
        watched = set()
        for variable in kl_variables():
            try:
                handle = variable.handle
            except (AttributeError, ValueError):  # a variable without a handle here: cannot check it
                return None
            internal = captured.get(id(handle))
            if internal is None:  # the call used every one of them: this graph reaches it some other way
                return None
            watched.add(id(internal))
        for op in graph.get_operations()[self._position :]:
            if op.type != "ReadVariableOp" and any(id(t) in watched for t in op.inputs):
                return None
        return self._kl
