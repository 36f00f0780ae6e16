"""``fedgpu simulate``: a job spec over thousands of simulated nodes on Ray, with the real training,
cohorts, encryption, adder and driver in process (no gRPC). Ray comes with ``fedgpu[sim]``."""

__all__: list[str] = []
