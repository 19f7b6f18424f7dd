"""The Kubernetes runtime: ``meshctl`` against the ``k8s/`` manifests, through the API server."""
