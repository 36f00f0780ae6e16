"""Differential privacy for fedgpu: what protects a data owner's records, and the record of what was spent.

- ``dp``: record-level DP-SGD with Opacus on the node (noise planning, one privatised round).
- ``ledger``: the owner's durable epsilon ledger, recomputed by Opacus's accountants.
- ``client_dp``: client-level DP-FedAvg helpers with distributed noise (large cohorts only).

Nothing is imported here, so ``import fedgpu.privacy`` does not load Opacus. See docs/privacy.md.
"""


__all__: list[str] = []
