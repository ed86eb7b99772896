# Harnesses for the API services' own decoders (api/services/) (see CMakeLists.txt beside this file for the convention).
gantry_fuzzer(join_token gantry_services)
# API-key pepper version rows (api/services/pepper_ring.h), which a restored backup may carry.
gantry_fuzzer(pepper_row gantry_services)
# The OIDC issuers file (server/oidc_config.h), parsed and checked without fetching anything.
gantry_fuzzer(oidc_config gantry_daemon gantry_lib)
