"""The wire: chunks, signatures, tensors and the one conversion between domain objects and protobuf."""

# The protocol's major version, exchanged when a node registers and a driver submits: peers of
# another version are refused with a message instead of failing on a field they do not know.
# 2: an update chunk is signed without its data, which its SHA-256 stands for (fedgpu.wire.auth).
# 3: UploadReply.not_needed (an over-selected round closed without the update) and RoundResult.released
#    (the last round pays nodes outside it: held pay, the settled unearned pool), which a protocol-2 peer
#    would misread or refuse.
PROTOCOL_VERSION = 3

__all__ = ["PROTOCOL_VERSION"]
