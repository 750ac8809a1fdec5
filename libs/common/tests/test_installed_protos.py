"""The OTLP exporter's protobuf modules are opentelemetry-proto's own.

xds-protos (Envoy's RLS classes) ships an older copy of ``opentelemetry/proto``; when its files
are the ones on disk, every service fails at start-up with tracing on. ``make install``
reinstalls opentelemetry-proto last so this cannot happen; this test names the cause if it does.
"""

from opentelemetry.proto.common.v1 import common_pb2


def test_opentelemetry_proto_files_are_not_the_xds_protos_copy() -> None:
    assert hasattr(common_pb2, "InstrumentationScope"), (
        "opentelemetry/proto was overwritten by xds-protos' copy; run `make install`"
    )
