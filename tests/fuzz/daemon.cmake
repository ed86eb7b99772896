# Harnesses for gantryd's own decoders (see CMakeLists.txt beside this file for the convention).
gantry_fuzzer(join_token gantry_daemon)
