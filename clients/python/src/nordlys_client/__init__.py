"""Helpers for the generated Nordlys API client.

The messages and stubs are generated into the ``nordlys.v1`` package (for
example ``nordlys.v1.projects_pb2`` and ``nordlys.v1.projects_pb2_grpc``);
this package adds a channel that sends an API key and a reader for the typed
details of an error.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = ["bad_request", "channel"]


def channel(
    target: str,
    api_key: str,
    *,
    plaintext: bool = False,
    root_certificates: bytes | None = None,
) -> grpc.Channel:
    """Opens a channel to the gateway at ``target`` (``host:port``) that sends
    ``authorization: Bearer <api_key>`` on every call.

    It uses TLS (the system's roots, or ``root_certificates``). With
    ``plaintext=True`` it connects without TLS, which gRPC only allows to a
    gateway on loopback: the key must not cross a network in clear text.
    """
    if plaintext:
        transport = grpc.local_channel_credentials()
    else:
        transport = grpc.ssl_channel_credentials(root_certificates=root_certificates)
    credentials = grpc.composite_channel_credentials(
        transport, grpc.access_token_call_credentials(api_key)
    )
    return grpc.secure_channel(target, credentials)


def bad_request(error: grpc.RpcError) -> error_details_pb2.BadRequest | None:
    """The google.rpc.BadRequest an INVALID_ARGUMENT error carries in its
    details (one field violation per rejected field), or None."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            found = error_details_pb2.BadRequest()
            detail.Unpack(found)
            return found
    return None
