"""The meshctl adapter of the compose runtime: ``meshctl up`` starts the stack (``stack.py``:
engine, env files, images, ``docker compose up``, the health wait) and ``ComposeRuntime``
drives it through the docker and Compose CLIs and the ports the stack publishes on 127.0.0.1
(the gateway and Consul)."""
