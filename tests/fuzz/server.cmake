# Harnesses for the gRPC server (server/): the HTTP/2 + gRPC framing path, from raw client bytes
# (after the connection preface) through nghttp2, header and metadata handling, message framing,
# protobuf-c decoding, dispatch and the responses.
gantry_fuzzer(grpc_h2 gantry_server gantry_api_testing)
target_include_directories(fuzz_grpc_h2 PRIVATE ${PROJECT_SOURCE_DIR})
