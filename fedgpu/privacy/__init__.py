"""Differential privacy for fedgpu: what protects a data owner's records, and the record of what was spent.

- ``dp``: record-level DP-SGD with Opacus on the node (noise planning, one privatised round).
- ``plan_cache``: the node's noise plans on disk, next to the ledger (a search once per machine).
- ``clipping``: book-keeping clipping, DP-SGD's clipped sum in one backward pass (mode ``bk``).
- ``ledger``: the owner's durable epsilon ledger, recomputed by Opacus's accountants.
- ``client_dp``: client-level DP-FedAvg helpers with distributed noise (large cohorts only).

Nothing is imported here, so ``import fedgpu.privacy`` does not load Opacus. See docs/privacy.md.
"""


__all__: list[str] = []
