# Harnesses for gantryd's configuration (server/config.c; see CMakeLists.txt beside this file).
gantry_fuzzer(config gantry_config gantry_lib)
