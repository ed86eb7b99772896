# Harnesses for the operator console's decoders (server/console_req.c; see CMakeLists.txt beside this file).
gantry_fuzzer(console_req gantry_console_req gantry_lib)
