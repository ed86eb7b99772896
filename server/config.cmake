# gantryd's configuration module (server/config.[ch]), built on its own so it does not depend on
# the rest of server/ (which has its own CMakeLists.txt). Included from the root CMakeLists.txt.
find_package(PkgConfig REQUIRED)
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
add_library(gantry_config STATIC ${CMAKE_CURRENT_LIST_DIR}/config.c)
target_link_libraries(gantry_config PUBLIC gantry_lib PkgConfig::JANSSON)
