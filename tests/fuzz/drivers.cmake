# Harnesses for drivers/ (see CMakeLists.txt beside this file for the convention).
#   fuzz_k8s_json      Kubernetes API documents and driver_config values (drivers/k8s_json.h)
#   fuzz_driver_state  the process and fake drivers' state files, bwrap's status stream,
#                      /proc/<pid>/stat
#                      (source: tests/drivers/fuzz_driver_state.c; seeds: corpus/driver_state/)
gantry_fuzzer(k8s_json gantry_drivers)
add_executable(fuzz_driver_state ${PROJECT_SOURCE_DIR}/tests/drivers/fuzz_driver_state.c)
target_link_libraries(fuzz_driver_state PRIVATE gantry_drivers)
target_link_options(fuzz_driver_state PRIVATE -fsanitize=fuzzer)
# fuzz_process_net_door: the door files of network=egress (drivers/process_net.h)
gantry_fuzzer(process_net_door gantry_drivers)
# fuzz_k8s_netpol: the egress relay's NetworkPolicy as the API server sends it back, and the relay
# settings checked and rendered (drivers/k8s_netpol.h)
gantry_fuzzer(k8s_netpol gantry_drivers)
# fuzz_k8s_claims: agent-sandbox's SandboxClaim, SandboxClaimList and SandboxWarmPool as the API server
# sends them, and the allocation keys of a driver_config (drivers/k8s_claims.h)
gantry_fuzzer(k8s_claims gantry_drivers)
# fuzz_k8s_pools: SandboxWarmPool and SandboxWarmPoolList of Gantry-owned warm pools as the API server
# sends them, and the replacement built from one (drivers/k8s_pools.h)
gantry_fuzzer(k8s_pools gantry_drivers)
# fuzz_ws: WebSocket frames, message reassembly and the handshake response (drivers/ws.h)
gantry_fuzzer(ws gantry_drivers)
