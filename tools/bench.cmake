# gantry-bench: load generator. It links the client side only (store client, writer) plus the
# test harness that runs a local cluster of gantry-store-node processes (tests/integration/cluster.c,
# which needs SQLite to read DUMPs). The node binary is found next to it in the build tree
# (../store/gantry-store-node) or through --node-bin.
add_executable(gantry-bench
  ${CMAKE_CURRENT_SOURCE_DIR}/bench/bench_main.c
  ${CMAKE_CURRENT_SOURCE_DIR}/bench/bench_store.c
  ${PROJECT_SOURCE_DIR}/tests/integration/cluster.c)
target_include_directories(gantry-bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/bench ${PROJECT_SOURCE_DIR}/tests/integration)
target_link_libraries(gantry-bench PRIVATE gantry_store PkgConfig::SQLITE3 Threads::Threads)
add_dependencies(gantry-bench gantry-store-node)
