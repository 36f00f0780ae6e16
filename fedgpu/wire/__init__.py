"""The one place that converts between domain objects and the wire: chunks, signatures, tensors, protobuf."""

__all__: list[str] = []
