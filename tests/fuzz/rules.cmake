# Harnesses for api/rules (see CMakeLists.txt beside this file for the convention).
#   fuzz_sandbox_policy  a Create request's SandboxSpec: its own policy (tighten-only), the host
#                        network check, the three-layer egress decision
gantry_fuzzer(sandbox_policy gantry_rules)
#   fuzz_secret_ref      a provider config value as a Kubernetes Secret reference (secret_ref.h)
gantry_fuzzer(secret_ref gantry_rules)
#   fuzz_node_placement  a "kubernetes" driver_config value's node_selector and tolerations (shapes and
#                        the delegation decision) and a scope's toleration pattern / node selector pair
gantry_fuzzer(node_placement gantry_rules)
