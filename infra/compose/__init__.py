"""The meshctl adapter of the compose runtime: ``ComposeRuntime`` drives the stack that
``infra/docker/compose-up.sh`` starts, through the docker and docker-compose CLIs and the
ports the stack publishes on 127.0.0.1 (the gateway and Consul)."""
