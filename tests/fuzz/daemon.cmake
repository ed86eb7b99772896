# Harnesses for the API services' own decoders (api/services/) (see CMakeLists.txt beside this file for the convention).
gantry_fuzzer(join_token gantry_services)
