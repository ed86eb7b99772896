# Harnesses for the store module (see CMakeLists.txt beside this file for the convention).
gantry_fuzzer(dqlite_response gantry_store_proto gantry_lib)
gantry_fuzzer(backup_archive gantry_store gantry_lib)
gantry_fuzzer(sealed_backup gantry_store_sealed gantry_lib)
