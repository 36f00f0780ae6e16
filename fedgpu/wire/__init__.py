"""The wire: chunks, signatures, tensors and the one conversion between domain objects and protobuf."""

# The protocol's major version, exchanged when a node registers and a driver submits: peers of
# another version are refused with a message instead of failing on a field they do not know.
# 2: an update chunk is signed without its data, which its SHA-256 stands for (fedgpu.wire.auth).
PROTOCOL_VERSION = 2

__all__ = ["PROTOCOL_VERSION"]
