"""gRPC server reflection under both of its names: ``grpc.reflection.v1.ServerReflection``,
which current grpcurl and Postman ask for first, and ``grpc.reflection.v1alpha.ServerReflection``
for older clients.

grpcio-reflection (1.85) serves only v1alpha. v1 is the same protocol promoted unchanged
(grpc-proto ``grpc/reflection/v1/reflection.proto``: the same messages, fields and numbers in
package ``grpc.reflection.v1``), so one v1alpha servicer answers both: its messages are the v1
messages on the wire. The v1 file descriptor, derived from v1alpha's by renaming the package,
is added to the descriptor pool so that reflection can describe the v1 service too.
"""

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import (  # type: ignore[import-untyped]  # types-protobuf not installed
    descriptor_pb2,
    descriptor_pool,
)
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA_SERVICE: str = reflection.SERVICE_NAME
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_V1ALPHA_PACKAGE, _V1_PACKAGE = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."


def _v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """v1alpha's ``reflection.proto`` as v1's: package and type references renamed."""
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    file.name, file.package = _V1_FILE, "grpc.reflection.v1"
    file.ClearField("options")
    for message in file.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # message fields only; setting one marks it set
                field.type_name = field.type_name.replace(_V1ALPHA_PACKAGE, _V1_PACKAGE)
    for service in file.service:
        for method in service.method:
            method.input_type = method.input_type.replace(_V1ALPHA_PACKAGE, _V1_PACKAGE)
            method.output_type = method.output_type.replace(_V1ALPHA_PACKAGE, _V1_PACKAGE)
    return file


def _describe_v1(pool: Any) -> None:
    """Add the v1 descriptor to ``pool`` unless it holds one already (idempotent)."""
    try:
        pool.FindFileByName(_V1_FILE)
    except KeyError:
        pool.AddSerializedFile(_v1_file_descriptor().SerializeToString())


def enable_server_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection on ``server`` under v1 and v1alpha, listing ``service_names`` and
    both reflection services; describes symbols of the default descriptor pool."""
    pool = descriptor_pool.Default()
    _describe_v1(pool)
    servicer = reflection.aio.ReflectionServicer(  # type: ignore[attr-defined]  # not in stubs
        (*service_names, V1_SERVICE, V1ALPHA_SERVICE), pool=pool
    )
    for name in (V1_SERVICE, V1ALPHA_SERVICE):
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),)
        )
