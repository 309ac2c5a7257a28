"""Several firebox nodes serving one deployment, active-active (issue 8).

* ``config``: the ``cluster:`` section (``ClusterConfig``);
* ``bus``: the event bus and key-value buckets, in process or on NATS JetStream;
* ``membership``: heartbeats and each node's view of the others' health;
* ``live``: the ESRP's state table and the monitor's outages shared between nodes;
* ``once``: claims so that work two nodes see is done once (PostgreSQL or in process);
* ``http`` / ``cli``: ``GET /cluster`` and ``firebox cluster status``.
"""
