# gantry, the command-line client: the gRPC client library and the generated messages only.
add_executable(gantry
  ${CMAKE_CURRENT_LIST_DIR}/gantry.c ${CMAKE_CURRENT_LIST_DIR}/gantry_call.c ${CMAKE_CURRENT_LIST_DIR}/gantry_out.c
  ${CMAKE_CURRENT_LIST_DIR}/gantry_ctx.c ${CMAKE_CURRENT_LIST_DIR}/gantry_cluster.c
  ${CMAKE_CURRENT_LIST_DIR}/gantry_principals.c ${CMAKE_CURRENT_LIST_DIR}/gantry_tenants.c
  ${CMAKE_CURRENT_LIST_DIR}/gantry_providers.c ${CMAKE_CURRENT_LIST_DIR}/gantry_sandbox.c)
target_link_libraries(gantry PRIVATE gantry_grpc_client gantry_api gantry_lib PkgConfig::JANSSON)
