"""The egress gateway: the generator's only way out, run by the orchestrator beside
each generation (``python -m gateway CONFIG``).

Two Unix sockets in one directory, which is all of the gateway a generator sees:

- ``proxy.sock``: an HTTP proxy (proxy.py) that tunnels HTTPS (CONNECT) and forwards
  plain HTTP to the hosts the egress policy allows, and answers anything else with a
  403 naming the setting that decides;
- ``model.sock``: the model relay, which forwards the agent's model API calls with the
  real key attached (the agent holds a placeholder), reads the ``usage`` of every
  answer, streamed or not, and refuses further calls once a budget is spent.

Everything either side does is appended to an events file outside the generator's
reach, which the orchestrator turns into the generation's receipt.
"""
