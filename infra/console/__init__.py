"""The mesh console: a live page of the running platform (topology, rollouts, the autoscaler,
traces, operations), served on loopback by ``meshctl console`` and ``make up``."""
