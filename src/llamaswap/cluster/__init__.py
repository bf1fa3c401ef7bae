"""llamaswap across machines on Ray Serve (docs/cluster.md).

`nodes` and `ranking` are pure and import without Ray; `node_replica`, `request_router`,
`ingress` and `app` need the `ray` extra and are imported only by `llamaswap cluster`.
"""
