"""The aggregator: grpc.aio servicers, rounds and cohorts, the reward ledger, the SQLAlchemy store. Holds no key."""

__all__: list[str] = []
