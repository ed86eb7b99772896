add_executable(gantry-store ${CMAKE_CURRENT_SOURCE_DIR}/store_cli.c)
target_link_libraries(gantry-store PRIVATE gantry_store gantry_store_backup gantry_raft)
