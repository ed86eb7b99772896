# Harnesses for the gRPC transport (server/grpc/): the HTTP/2 + gRPC framing path, from raw client bytes
# (after the connection preface) through nghttp2, header and metadata handling, message framing,
# protobuf-c decoding, dispatch and the responses.
gantry_fuzzer(grpc_h2 gantry_grpc gantry_api gantry_api_testing)
# The strict request check (wirecheck.h) that walks every request's wire bytes before decoding.
gantry_fuzzer(wirecheck gantry_grpc gantry_api gantry_api_testing)
