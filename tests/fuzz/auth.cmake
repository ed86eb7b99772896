# Harnesses for api/auth (see CMakeLists.txt beside this file for the convention).
gantry_fuzzer(jwt gantry_auth)
gantry_fuzzer(apikey gantry_auth)
gantry_fuzzer(tokenreview gantry_auth)
