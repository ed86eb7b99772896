# gantry, the command-line client: the gRPC client library and the generated messages only. Everything
# but main() is the gantry_cli library, which tests/unit/test_gantry_cli.c links too.
add_library(gantry_cli STATIC
  ${CMAKE_CURRENT_LIST_DIR}/gantry_help.c ${CMAKE_CURRENT_LIST_DIR}/gantry_call.c
  ${CMAKE_CURRENT_LIST_DIR}/gantry_out.c ${CMAKE_CURRENT_LIST_DIR}/gantry_ctx.c
  ${CMAKE_CURRENT_LIST_DIR}/gantry_cluster.c ${CMAKE_CURRENT_LIST_DIR}/gantry_principals.c
  ${CMAKE_CURRENT_LIST_DIR}/gantry_tenants.c ${CMAKE_CURRENT_LIST_DIR}/gantry_providers.c
  ${CMAKE_CURRENT_LIST_DIR}/gantry_sandbox.c)
target_link_libraries(gantry_cli PUBLIC gantry_grpc_client gantry_api gantry_lib PkgConfig::JANSSON)
add_executable(gantry ${CMAKE_CURRENT_LIST_DIR}/gantry.c)
target_link_libraries(gantry PRIVATE gantry_cli)
