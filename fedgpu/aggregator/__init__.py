"""The aggregator: holds no key. grpc.aio servicers (``service``) over a façade (``core``) whose parts
each own one kind of state: nodes and liveness (``registry``), tasks and uploads (``uploads``), round
attempts (``attempt``, ``rounds``), jobs and their drivers (``jobs``), watchers (``events``); beneath
them cohort assignment, the reward ledger's writer and the SQLAlchemy store."""

__all__: list[str] = []
