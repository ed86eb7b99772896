# gantry, the command-line client: the gRPC client library and the generated messages only.
add_executable(gantry ${CMAKE_CURRENT_LIST_DIR}/gantry.c ${CMAKE_CURRENT_LIST_DIR}/gantry_res.c)
target_link_libraries(gantry PRIVATE gantry_grpc_client gantry_api gantry_lib)
