# Harnesses for api/rules (see CMakeLists.txt beside this file for the convention).
#   fuzz_sandbox_policy  a Create request's SandboxSpec: its own policy (tighten-only), the host
#                        network check, the three-layer egress decision
gantry_fuzzer(sandbox_policy gantry_rules)
